"""Data at scale: `tunekit sft` against a plain trl script on a 200,000-row chat file, side by side.

    $ python benchmarks/data_scale.py --rows 200000 --num-proc 2          # the figures in benchmarks/README.md
    $ python benchmarks/data_scale.py --rows 20000 --skip-stream           # a quick look

Each side runs in a fresh process under `/usr/bin/time` (wall seconds, peak RSS), with its own empty
cache first and then again with the cache warm:

- tunekit: `tunekit sft RECIPE` (tiny LLaMA, max_length 512, max_steps 1, no eval), `TUNEKIT_CACHE` set;
- trl: `datasets.load_dataset("json")` + `trl.SFTTrainer` with the same model, length, steps, batch and
  `dataset_num_proc`, assistant-only loss, `HF_DATASETS_CACHE` set.

Then `tunekit validate` of the same recipe (cache warm), the tokenising time of tunekit with
`data.num_proc` 1 against 2 (from the cache's build log), and streaming continued pretraining over a
generated 2 GB text file: seconds to the first logged step, and peak RSS over 50 steps.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORDS = (ROOT / "tunekit" / "datasets" / "words.txt").read_text().split()

TRL_SCRIPT = """
import sys
import datasets
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

data_file, model_dir, out, procs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
train = datasets.load_dataset("json", data_files=data_file, split="train")
tokenizer = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir)
config = SFTConfig(output_dir=out, max_length=512, max_steps=1, per_device_train_batch_size=8, report_to="none",
                   assistant_only_loss=True, dataset_num_proc=procs, save_strategy="no", logging_steps=1,
                   use_cpu=True)
SFTTrainer(model=model, args=config, train_dataset=train, processing_class=tokenizer).train()
"""


def chat_file(path: Path, rows: int, seed: int = 0) -> Path:
    """System prompt + two user/assistant turns per row (median ~270 tiny-tokenizer tokens), seeded."""
    rng = random.Random(seed)

    def words(n: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(n))

    with path.open("w", encoding="utf-8") as handle:
        for _ in range(rows):
            messages = [{"role": "system", "content": "You are a helpful assistant. " + words(20)}]
            for _ in range(2):
                messages.append({"role": "user", "content": words(rng.randint(20, 70))})
                messages.append({"role": "assistant", "content": words(rng.randint(30, 90))})
            handle.write(json.dumps({"messages": messages}) + "\n")
    return path


def text_file(path: Path, size_bytes: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(WORDS) for _ in range(80)) + "\n" for _ in range(1000)]
    written = 0
    with path.open("w", encoding="utf-8") as handle:
        while written < size_bytes:
            line = lines[written % 1000]
            handle.write(line)
            written += len(line)
    return path


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in GB, output) of a command run under /usr/bin/time."""
    done = subprocess.run(
        ["/usr/bin/time", "-f", "TIME %e %M", *command], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    wall, kb = done.stderr.strip().splitlines()[-1].split()[1:3]
    return float(wall), int(kb) / 1024**2, done.stdout + done.stderr


def recipe(folder: Path, data: Path, procs: int, **data_settings: object) -> Path:
    import yaml

    text = {
        "method": "sft",
        "model": {"name_or_path": "tiny:llama"},
        "data": {"train": str(data), "max_length": 512, "eval_fraction": 0, "num_proc": procs, **data_settings},
        "training": {"learning_rate": 1e-3, "max_steps": 1, "batch_size": 8, "logging_steps": 1},
        "output_dir": str(folder / "run"),
    }
    path = folder / f"recipe-{procs}.yaml"
    path.write_text(yaml.safe_dump(text), encoding="utf-8")
    return path


def tokenising_seconds(cache: Path) -> float:
    log = cache / "data" / "builds.jsonl"
    return sum(
        json.loads(line)["seconds"]
        for line in log.read_text().splitlines()
        if json.loads(line)["step"].startswith("tokenising")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--num-proc", type=int, default=2)
    parser.add_argument("--stream-gb", type=float, default=2.0)
    parser.add_argument("--skip-stream", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tunekit-data-scale-"))
    results: dict[str, object] = {"rows": args.rows, "num_proc": args.num_proc}
    try:
        data = chat_file(work / "chat.jsonl", args.rows)
        results["file_mb"] = round(data.stat().st_size / 1e6)
        env = {
            **os.environ,
            "TUNEKIT_CACHE": str(work / "tk-cache"),
            "HF_DATASETS_CACHE": str(work / "hf-cache"),
            "HF_HUB_OFFLINE": "1",
        }
        from tunekit.models.tiny import ensure_tiny

        os.environ["TUNEKIT_CACHE"] = env["TUNEKIT_CACHE"]
        model = ensure_tiny("tiny:llama")
        tk = [shutil.which("tunekit") or "tunekit", "sft", str(recipe(work, data, args.num_proc)), "--overwrite"]
        trl = [sys.executable, "-c", TRL_SCRIPT, str(data), str(model), str(work / "trl-out"), str(args.num_proc)]
        for name, command in (("tunekit", tk), ("trl", trl)):
            for run in ("first", "second"):
                wall, rss, _ = timed(command, env)
                results[f"{name}_{run}"] = {"seconds": round(wall, 1), "peak_rss_gb": round(rss, 2)}
                print(f"{name} {run} run: {wall:.1f} s, peak RSS {rss:.2f} GB", flush=True)
        wall, rss, _ = timed([tk[0], "validate", tk[2]], env)
        results["tunekit_validate"] = {"seconds": round(wall, 1), "peak_rss_gb": round(rss, 2)}
        print(f"tunekit validate: {wall:.1f} s, peak RSS {rss:.2f} GB", flush=True)
        for procs in (1, args.num_proc):
            cache = work / f"tk-procs-{procs}"
            timed([tk[0], "preprocess", str(recipe(work, data, procs))], {**env, "TUNEKIT_CACHE": str(cache)})
            results[f"tokenising_seconds_num_proc_{procs}"] = round(tokenising_seconds(cache), 1)
            print(f"tokenising with num_proc {procs}: {results[f'tokenising_seconds_num_proc_{procs}']} s", flush=True)
        if not args.skip_stream:
            results["stream"] = stream(work, env, args.stream_gb)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))


def stream(work: Path, env: dict[str, str], gigabytes: float) -> dict[str, float]:
    """Streaming continued pretraining over a generated text file: seconds to the first step, peak RSS."""
    import yaml

    corpus = text_file(work / "corpus.txt", int(gigabytes * 1e9))
    settings = {
        "method": "pretrain",
        "model": {"name_or_path": "tiny:llama"},
        "data": {"train": str(corpus), "streaming": True, "eval_rows": 64},
        "pretrain": {"block_size": 128},
        "training": {"learning_rate": 1e-3, "max_steps": 50, "batch_size": 8, "logging_steps": 1},
        "output_dir": str(work / "stream-run"),
    }
    path = work / "stream.yaml"
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    started = time.perf_counter()
    command = ["/usr/bin/time", "-f", "TIME %e %M", shutil.which("tunekit") or "tunekit", "pretrain", str(path)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = None
    lines = []
    for line in process.stdout:  # type: ignore[union-attr]
        lines.append(line)
        if first is None and line.startswith("step 1/"):
            first = time.perf_counter() - started
    process.wait()
    wall, kb = lines[-1].split()[1:3]
    found = {
        "gb": gigabytes,
        "first_step_seconds": round(first or -1, 1),
        "seconds": float(wall),
        "peak_rss_gb": round(int(kb) / 1024**2, 2),
    }
    print(
        f"streaming {gigabytes} GB: first step after {found['first_step_seconds']} s, 50 steps in {wall} s, "
        f"peak RSS {found['peak_rss_gb']} GB",
        flush=True,
    )
    return found


if __name__ == "__main__":
    main()
