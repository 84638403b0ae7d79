"""spamjob's scoring core (`spamjob.scorer.BatchScorer`) on engines users already run:
`spamjob.engines.ray` (Ray Data, `pip install 'spamjob[ray]'`) and `spamjob.engines.spark`
(PySpark, `pip install 'spamjob[spark]'`). The core never imports these modules or their
engines."""
