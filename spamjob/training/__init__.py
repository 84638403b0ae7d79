"""Fine-tuning (`spamjob train`, `jobs/finetune.py`), module by module:

job.py          main: setup, the loop (`fit`, `train_step`), the classifier folder and its metrics
setup.py        what a run resolves first: accelerator, splits, model, slices, optimizer, loaders
loaders.py      the reference's loaders and the frozen-prefix cache's packed batches
evaluate.py     integer counts summed over processes, the operating point
checkpoints.py  epoch checkpoints and resume
optimizer.py    AdamW without torch._dynamo; accelerated.py: accelerate's prepare/unwrap
plots.py        loss and accuracy plots, drawn in a child process started early
"""
