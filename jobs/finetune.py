"""Fine-tuning job; the same options and code as `spamjob train`.

python jobs/finetune.py --data data --out runs/r1
accelerate launch --config_file accelerate_config.yaml jobs/finetune.py --data data --out runs/r1
"""

from spamjob.cli import run_standalone, train

if __name__ == "__main__":
    run_standalone(train, "finetune.py")
