"""Bulk scoring, stage by stage (`spamjob score`; the engines reuse the core and the columns):

inputs.py   discovery (files, folders, globs, store prefixes) and schemas  -- source.py: Source, Chunk
parquet.py  row groups; csv_reader.py: CSV streamed whole or in byte blocks
columns.py  text / label / kept columns; schema.py: one output schema for every input
setup.py    what a job resolves first; plan.py: what makes two runs one job
units.py    work units and who does each
loop.py     the threaded loop (stages.py, tokenize_pool.py); core.py: BatchScorer
runtimes/   the runtime seam: what runs the model (torch, ONNX Runtime)
parts.py    part files; output/: the output folder (local, store, reader) and its commit protocol
job.py      main and finish; report.py: counts and report files; recount.py: `spamjob report`
"""
