"""Bulk scoring job; the same options and code as `spamjob score`.

python jobs/score.py 'inbox/*.parquet' --model runs/r1 --out scored/
accelerate launch --config_file accelerate_config.yaml --multi_gpu --num_processes 8 jobs/score.py ...
"""

from spamjob.cli import run_standalone, score

if __name__ == "__main__":
    run_standalone(score, "score.py")
