"""spamjob.hardware: the CPU's matrix units read from /proc/cpuinfo (this kind of machine's, recorded,
and others as Linux names their flags), the override tests and benchmarks use, and what `auto`
picks from them; a scoring job on a CPU with a bf16 unit: bf16, said in the report with its label
agreement with fp32; `--mixed-precision no` there is today's fp32 to the bit."""

from __future__ import annotations

import json

import pytest
from support import predictions, report, score, spamjob

from spamjob import hardware
from spamjob.config import precision_choice

# Recorded on this project's 2-core machine (AMD EPYC, Zen 4): AVX-512 BF16 and VNNI, no AMX.
EPYC = """processor	: 0
vendor_id	: AuthenticAMD
model name	: AMD EPYC
flags		: fpu vme sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 avx512f avx512dq avx512cd avx512bw avx512vl \
avx512_bf16 avx512vbmi avx512_vbmi2 gfni vaes avx512_vnni avx512_bitalg avx512_vpopcntdq

processor	: 1
vendor_id	: AuthenticAMD
model name	: AMD EPYC
flags		: fpu sse
"""
# A Sapphire Rapids Xeon (AMX) and a Skylake Xeon (AVX-512, no bf16 or VNNI), flags as Linux names them.
XEON_SPR = """processor	: 0
model name	: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags		: fpu sse avx avx2 avx512f avx512_vnni avx512_bf16 avx_vnni amx_bf16 amx_tile amx_int8
"""
XEON_SKL = """processor	: 0
model name	: Intel(R) Xeon(R) CPU @ 2.00GHz
flags		: fpu sse avx avx2 avx512f avx512dq avx512cd avx512bw avx512vl
"""
GRAVITON3 = """processor	: 0
BogoMIPS	: 2100.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics asimddp sve svei8mm svebf16 i8mm bf16 rng
CPU implementer	: 0x41
CPU part	: 0xd40
"""


@pytest.mark.parametrize(
    "text, model, bf16, int8",
    [
        (EPYC, "AMD EPYC", "avx512_bf16", "avx512_vnni"),
        (XEON_SPR, "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz", "amx_bf16", "amx_int8"),
        (XEON_SKL, "Intel(R) Xeon(R) CPU @ 2.00GHz", None, None),
        (GRAVITON3, "0xd40", "bf16", "i8mm"),
    ],
)
def test_matrix_units_are_read_from_cpuinfo(text, model, bf16, int8):
    cpu = hardware.parse_cpuinfo(text)
    assert (cpu.model, cpu.bf16_unit, cpu.int8_unit) == (model, bf16, int8)
    assert set(cpu.features) <= set(hardware.KNOWN) and cpu.record()["bf16_unit"] == bf16


@pytest.mark.parametrize(
    "features, chosen",
    [("amx_bf16,amx_int8", "bf16"), ("avx512_bf16,avx512_vnni", "bf16"), ("avx2,avx512f", "no"), ("none", "no")],
)
def test_auto_follows_the_machine(machine, features, chosen):
    cpu = machine(features)
    assert cpu.source == hardware.ENV and precision_choice("auto", gpu=False)[0] == chosen
    assert precision_choice("no", gpu=False) == ("no", "asked for")
    if chosen == "bf16":
        assert cpu.bf16_unit in precision_choice("auto", gpu=False)[1]


def test_a_bf16_machine_scores_in_bf16_and_reports_its_agreement(machine, classifier_dir, data_dir, tmp_path):
    """On OpenVINO where the extra is installed (its agreement measured on the classifier's test
    messages, once), else on torch (on the job's first 128 rows)."""
    from spamjob.scoring import runtimes

    args = [str(data_dir / "validation.csv"), "--model", str(classifier_dir)]
    machine("avx2")
    assert score(*args, "--out", str(tmp_path / "fp32")).exit_code == 0
    machine("amx_bf16,amx_int8,avx512_bf16")
    assert score(*args, "--out", str(tmp_path / "auto")).exit_code == 0
    assert score(*args, "--out", str(tmp_path / "no"), "--mixed-precision", "no").exit_code == 0
    auto, exact = report(tmp_path / "auto"), report(tmp_path / "no")
    assert auto["mixed_precision"] == "bf16" and "amx_bf16" in auto["precision_choice"]
    assert auto["cpu"]["bf16_unit"] == "amx_bf16" and auto["cpu"]["read_from"] == hardware.ENV
    on_ov = runtimes.get("openvino").available()  # the [openvino] extra: a README install lacks it
    assert auto["runtime"]["name"] == ("openvino" if on_ov else "torch") and exact["runtime"]["name"] == "torch"
    agreement = auto["agreement_with_fp32"]
    assert agreement["precision"] == "bf16" and agreement["rows_compared"] == (134 if on_ov else 128)
    assert 0.95 <= agreement["same_prediction"] <= 1.0 and agreement["max_abs_probability_diff"] < 0.05
    assert "bf16 labels agree with fp32 on" in (tmp_path / "auto" / "report.md").read_text()
    assert exact["mixed_precision"] == "no" and "agreement_with_fp32" not in exact
    fp32, no = predictions(tmp_path / "fp32"), predictions(tmp_path / "no")
    assert no["spam_probability"].tolist() == fp32["spam_probability"].tolist()  # bit for bit


def test_env_says_what_train_and_score_would_pick():
    """`spamjob env`: the text a bug report needs, and the same facts as JSON."""
    from spamjob.scoring import runtimes

    runtime = "openvino" if runtimes.get("openvino").available() else "torch"
    text = spamjob("env", env={hardware.ENV: "amx_bf16,amx_int8"})
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == "Copy-and-paste the text below in your bug report."
    assert any(line.startswith("- CPU: ") and "amx_bf16 amx_int8" in line for line in lines)
    assert any(line.startswith(f"- spamjob score would use: cpu, runtime {runtime}, bf16 (auto: ") for line in lines)
    assert any(line.startswith("- spamjob train would use: cpu, bf16 (auto: ") for line in lines)
    facts = json.loads(spamjob("env", "--json").stdout)  # the tests' CPU: no bf16 unit
    assert facts["score"]["precision"] == facts["train"]["precision"] == "no"
    assert facts["cpu"]["read_from"] == hardware.ENV and facts["score"]["model_workers"] >= 1
    assert set(facts["extras"]) == {"tf", "lora", "ray", "spark", "onnx", "openvino", "s3", "gcs", "azure"} | {
        "tensorboard",
        "mlflow",
        "wandb",
    }


def test_int8_and_fp32_runtimes_keep_their_precision_on_a_bf16_machine(machine):
    """With a bf16 unit, `auto` still leaves --quantize int8 to ONNX Runtime's int8 (fp32 around it),
    and --runtime onnxruntime runs fp32: each says why."""
    from spamjob.scoring import runtimes

    machine("amx_bf16")
    assert runtimes.precision("auto", False) == ("bf16", "auto: the CPU multiplies bf16 natively (amx_bf16)")
    precision, why = runtimes.precision("auto", False, "int8")
    assert precision == "no" and "--quantize int8" in why
    on_ort = runtimes.get("onnxruntime").available()  # the [onnx] extra: a README install lacks it
    assert runtimes.resolve("auto", runtimes.Request("cpu", precision, "int8")) == (
        "onnxruntime" if on_ort else "torch"
    )
    assert runtimes.precision("auto", False, None, "onnxruntime") == ("no", "auto: --runtime onnxruntime runs fp32")
    assert runtimes.precision("bf16", False, None, "torch") == ("bf16", "asked for")


@pytest.mark.parametrize("width, chosen", [(768, "bf16"), (1024, "bf16"), (512, "no"), (32, "no")])
def test_training_auto_takes_bf16_on_the_cpu_only_where_it_was_faster(machine, width, chosen):
    """bf16 training measured 1.6x fp32 at 768 dims, on a par at 512, 0.8x at 256 (RESULTS.md)."""
    from spamjob.config import TrainConfig

    machine("amx_bf16,avx512_bf16")
    cfg = TrainConfig(weights="random", emb_dim=None if width == 768 else width)
    precision, why = precision_choice("auto", gpu=False, width=cfg.width)
    assert precision == chosen and (str(width) in why) == (chosen == "no")
    assert precision_choice("bf16", gpu=False, width=32) == ("bf16", "asked for")
    machine("avx2")
    assert precision_choice("auto", gpu=False, width=1024)[0] == "no"
