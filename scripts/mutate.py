#!/usr/bin/env python3
"""Mutation testing by a list of planted bugs: does some test fail when the code is wrong in a way that matters?

Each mutant is one small edit (an exact snippet of a module and its wrong version) and the test files or ids that
should catch it. The script copies the checkout to a temporary folder (not .git, caches or test artifacts; the
symlinked model folders stay links), runs the named tests once on the unchanged copy (a failing baseline would make
every mutant look caught), then for each mutant applies the edit, runs its tests with PYTHONPATH set to the copy,
and puts the file back. A mutant is caught when its tests fail (exit 1) or time out, survives when they pass, and
is stale when its snippet is no longer in the code (update the list). Prints a JSON summary; exit 1 if any mutant
survived or is stale.

    python3 scripts/mutate.py                       # every mutant (several minutes on 2 cores)
    python3 scripts/mutate.py --only auth-bare-key  # one (or a comma-separated few)
    python3 scripts/mutate.py --list
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(".git", "__pycache__", ".pytest_cache", "test-artifacts", "runs", "reports", "build",
                                "*.egg-info", ".gl", ".whl")


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str  # relative to the checkout
    old: str  # must occur exactly once in the file
    new: str
    tests: tuple[str, ...]  # pytest arguments: files or test ids
    what: str  # the bug, in words


SAMPLING = ("tests/test_sample.py", "tests/test_processors_parity.py")

MUTANTS = [
    # ---- sampling (genloom/sample.py) -------------------------------------------------------------------------
    Mutant("sample-top-k-drops-kth", "genloom/sample.py",
           'return logits.masked_fill(logits < kth, float("-inf"))',
           'return logits.masked_fill(logits <= kth, float("-inf"))',
           SAMPLING, "top-k keeps k - 1 tokens (the k-th is masked too)"),
    Mutant("sample-top-p-keeps-too-few", "genloom/sample.py",
           "drop = cum - sorted_logits.softmax(-1) >= p",
           "drop = cum >= p",
           SAMPLING, "nucleus drops the token that makes the mass reach p"),
    Mutant("sample-repetition-penalty-inverted", "genloom/sample.py",
           "penalised = torch.where(logits > 0, logits / p, logits * p)",
           "penalised = torch.where(logits > 0, logits * p, logits / p)",
           SAMPLING, "repetition penalty rewards seen tokens"),
    Mutant("sample-temperature-multiplies", "genloom/sample.py",
           "return lambda counts, logits: logits / t",
           "return lambda counts, logits: logits * t",
           SAMPLING, "temperature multiplies the logits instead of dividing"),
    # ---- the training loop and resume (genloom/train.py) -------------------------------------------------------
    Mutant("train-best-val-reset-on-resume", "genloom/train.py",
           'self.step, self.best_val, self.elapsed = state["step"], state["best_val"], state["elapsed"]',
           'self.step, self.best_val, self.elapsed = state["step"], float("inf"), state["elapsed"]',
           ("tests/test_train.py", "tests/test_checkpoints.py"),
           "best_val forgotten on resume: a worse checkpoint can overwrite best/"),
    Mutant("train-grad-accum-unscaled", "genloom/train.py",
           "(loss / t.grad_accum).backward()",
           "loss.backward()",
           ("tests/test_train.py", "tests/test_grad_accum.py"),
           "accumulated gradients not divided by the number of micro-batches"),
    Mutant("train-data-rng-not-restored", "genloom/train.py",
           'self.data_gen.set_state(state["rng_data"])',
           "self.data_gen.manual_seed(self.cfg.train.seed)",
           ("tests/test_train.py", "tests/test_checkpoints.py"), "resume restarts the batch order from the seed"),
    # ---- diffusion samplers (genloom/diffusion.py) -------------------------------------------------------------
    Mutant("diffusion-ddim-direction-current-abar", "genloom/diffusion.py",
           "x_prev = abar_prev**0.5 * x0 + (1 - abar_prev - sigma**2) ** 0.5 * eps",
           "x_prev = abar_prev**0.5 * x0 + (1 - abar - sigma**2) ** 0.5 * eps",
           ("tests/test_diffusion.py",), "DDIM's direction term uses the current instead of the previous alpha-bar"),
    Mutant("diffusion-ddpm-variance-large", "genloom/diffusion.py",
           "var = ((1 - abar_prev) / (1 - abar) * (1 - alpha)).clamp(min=1e-20)",
           "var = (1 - alpha).clamp(min=1e-20)",
           ("tests/test_diffusion.py",), 'DDPM samples with "fixed_large" variance instead of the posterior\'s'),
    Mutant("diffusion-leading-spacing-shifted", "genloom/diffusion.py",
           "ts = np.arange(steps) * (n // steps)",
           "ts = np.arange(steps) * (n // steps) + 1",
           ("tests/test_diffusion.py",), '"leading" timesteps off by one'),
    # ---- metrics (genloom/metrics/) -----------------------------------------------------------------------------
    Mutant("metrics-perplexity-rescores-overlap", "genloom/metrics/text.py",
           "windows.append((begin, end, end - prev_end))",
           "windows.append((begin, end, end - begin - 1))",
           ("tests/test_eval.py",), "sliding-window perplexity scores overlapping tokens twice"),
    Mutant("metrics-fid-trace-term", "genloom/metrics/image.py",
           "cov_term = float(np.trace(cov_r) + np.trace(cov_f) - 2 * np.trace(root))",
           "cov_term = float(np.trace(cov_r) + np.trace(cov_f) - np.trace(root))",
           ("tests/test_metrics_image.py",), "FID's covariance term without the factor 2"),
    Mutant("metrics-speech-wer-swapped", "genloom/metrics/audio.py",
           "    hyps = [transcribe(x, sr)[\"text\"] for _, x, sr in named]\n    scores = wer(hyps, texts)",
           "    hyps = [transcribe(x, sr)[\"text\"] for _, x, sr in named]\n    scores = wer(texts, hyps)",
           ("tests/test_metrics_audio.py",), "speech_wer scores the texts against the transcripts (roles swapped)"),
    Mutant("metrics-classifier-accuracy-unscaled", "genloom/metrics/features.py",
           "logits, _ = model(ds.images[i: i + batch_size].float() / 255.0)",
           "logits, _ = model(ds.images[i: i + batch_size].float())",
           ("tests/test_eval_cli.py::test_classifier_accuracy_section",
            "tests/test_eval_cli.py::test_untrained_classifier_scores_the_share_of_the_class_it_predicts"),
           "classifier accuracy on 0-255 pixels instead of 0-1"),
    # ---- the serving engine (genloom/serve/engine.py) ---------------------------------------------------------
    Mutant("engine-logits-unreordered", "genloom/serve/engine.py",
           "self._logits = self._logits[order]",
           "self._logits = self._logits[:k]",
           ("tests/test_engine.py", "tests/test_cancel_batch.py"),
           "a row removed from a running batch leaves the pending logits unreordered"),
    # ---- API keys and rate limits (genloom/serve/auth.py) -----------------------------------------------------
    Mutant("auth-any-scheme", "genloom/serve/auth.py",
           'given = auth[7:].strip() if auth.lower().startswith("bearer ") else ""',
           'given = auth.split(" ", 1)[-1].strip()',
           ("tests/test_auth.py",), "any auth scheme (Basic, Token, ...) or a bare key accepted"),
    Mutant("auth-bare-key", "genloom/serve/auth.py",
           'given = auth[7:].strip() if auth.lower().startswith("bearer ") else ""',
           'given = auth[7:].strip() if auth.lower().startswith("bearer ") else auth.strip()',
           ("tests/test_auth.py",), "a key without 'Bearer ' accepted"),
    Mutant("auth-startswith", "genloom/serve/auth.py",
           "hmac.compare_digest(given.encode(), self.api_key.encode())",
           "given.startswith(self.api_key)",
           ("tests/test_auth.py",), "startswith instead of hmac.compare_digest (any extension of the key passes)"),
    Mutant("auth-plain-equality", "genloom/serve/auth.py",
           "hmac.compare_digest(given.encode(), self.api_key.encode())",
           "given == self.api_key",
           ("tests/test_auth.py",), "== instead of a constant-time comparison"),
    Mutant("rate-window-5s", "genloom/serve/auth.py",
           "while q and now - q[0] > 60:",
           "while q and now - q[0] > 5:",
           ("tests/test_rate_limit.py",), "the rate limit's window shrunk from 60 s to 5 s"),
    Mutant("rate-retry-after-1", "genloom/serve/auth.py",
           "return max(1, int(61 - (time.monotonic() - q[0]))) if q else 1",
           "return 1",
           ("tests/test_rate_limit.py",), "Retry-After fixed at 1 s"),
    # ---- storage and jobs -----------------------------------------------------------------------------------
    Mutant("storage-no-fsync", "genloom/files.py",
           "os.fsync(f.fileno())",
           "pass",
           ("tests/test_checkpoints.py",), "atomic writes without fsync (a crash can leave an empty file)"),
    Mutant("storage-unpickles", "genloom/files.py",
           'return torch.load(path, map_location="cpu", weights_only=True)',
           'return torch.load(path, map_location="cpu", weights_only=False)',
           ("tests/test_checkpoints.py",), "checkpoints loaded with full unpickling"),
    Mutant("keys-made-unlocked", "genloom/safety/keys.py",
           "    with locked(folder / LOCK_NAME):\n", "    with contextlib.nullcontext():\n",
           ("tests/test_provenance.py::test_servers_starting_together_make_one_signing_chain",),
           "replicas starting together each write a signing chain (a key of one beside the certificate of another)"),
    Mutant("jobs-requeued-never-resumes", "genloom/serve/jobs.py",
           'resume = (work / "run" / "last.pt").exists()',
           "resume = False",
           ("tests/test_jobs.py",), "a re-queued fine-tuning job starts over instead of resuming its checkpoint"),
    Mutant("jobs-cancel-overwrites-an-ended-job", "genloom/serve/database.py",
           'res = s.execute(update(Job).where(Job.id == jid, Job.status.in_(("queued", "running")))',
           "res = s.execute(update(Job).where(Job.id == jid)",
           ("tests/test_database.py::test_cancel_is_conditional_on_the_job_still_running",),
           "a cancel through one replica overwrites a job another process just finished"),
    Mutant("storage-migrations-unlocked", "genloom/serve/database.py",
           "with _sqlite_file_lock(url), engine.begin() as conn:",
           "with engine.begin() as conn:",
           ("tests/test_database.py::test_servers_starting_together_migrate_once",),
           "replicas starting together on a fresh database all try to create the schema"),
    Mutant("kb-stale-after-recreate", "genloom/knowledge/store.py",
           "if kb is None or kb.manifest != manifest:",
           'if kb is None or kb.generation != manifest["generation"]:',
           ("tests/test_kb.py::test_a_base_recreated_by_another_process_is_reloaded",),
           "a replica keeps answering from a knowledge base another replica deleted and re-created"),
    # ---- the CLI -------------------------------------------------------------------------------------------
    Mutant("cli-serve-binds-everywhere", "genloom/cli/serve.py",
           '"--host", default="127.0.0.1"',
           '"--host", default="0.0.0.0"',
           ("tests/test_serve_cli.py",), "genloom serve exposes the server on every interface by default"),
    # ---- the compiled one-row decode step (genloom/models/gpt.py) --------------------------------------------
    Mutant("decode-one-row-attention-unscaled", "genloom/models/gpt.py",
           "s = (q * k.unsqueeze(2)).sum(-1) * hs**-0.5",
           "s = (q * k.unsqueeze(2)).sum(-1)",
           ("tests/test_speed.py::test_one_row_static_step_reduces_and_attends_with_the_same_maths",),
           "the compiled step's attention forgets the 1/sqrt(head size) scale"),
    Mutant("decode-reduced-linear-drops-bias", "genloom/models/gpt.py",
           "return y if self.bias is None else y + self.bias",
           "return y",
           ("tests/test_speed.py::test_one_row_static_step_reduces_and_attends_with_the_same_maths",),
           "the one-row GEMV drops the bias"),
    Mutant("gelu-sigmoid-form-off-by-half", "genloom/models/gpt.py",
           "GELU_K, GELU_C = 2 * math.sqrt(2 / math.pi), 0.044715",
           "GELU_K, GELU_C = math.sqrt(2 / math.pi), 0.044715",
           ("tests/test_speed.py::test_gelu_tanh_sigmoid_form_is_the_tanh_gelu",),
           "the compiled GELU's sigmoid form uses z instead of 2z"),
]


def copy_checkout(dest: Path) -> Path:
    shutil.copytree(ROOT, dest, ignore=IGNORE, symlinks=True)
    return dest


def run_tests(copy: Path, tests, timeout: float) -> tuple[str, float, list[str]]:
    """('passed' | 'failed' | 'timeout' | 'error:<code>', seconds, failing test ids)."""
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(PYTHONPATH=str(copy), OMP_NUM_THREADS="1")
    t0 = time.monotonic()
    try:
        res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-o",
                              "addopts=", "-rf", *tests], cwd=copy, env=env, capture_output=True, text=True,
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", round(time.monotonic() - t0, 1), []
    failing = [line.split()[1] for line in res.stdout.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    outcome = {0: "passed", 1: "failed"}.get(res.returncode, f"error:{res.returncode}")
    if outcome.startswith("error"):
        failing = res.stdout.strip().splitlines()[-5:] + res.stderr.strip().splitlines()[-5:]
    return outcome, round(time.monotonic() - t0, 1), failing


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated mutant names")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per test run (a timeout counts as caught)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the run on the unchanged copy")
    ap.add_argument("--out", type=Path, default=ROOT / "test-artifacts" / "mutation.json")
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in {m.name for m in MUTANTS}]
    if unknown:
        print(f"mutate: unknown mutant '{unknown[0]}'; choose from {', '.join(m.name for m in MUTANTS)}",
              file=sys.stderr)
        return 2
    chosen = [m for m in MUTANTS if not names or m.name in names]
    if args.list:
        for m in chosen:
            print(f"{m.name:40s} {m.file}: {m.what}")
        return 0

    results = []
    with tempfile.TemporaryDirectory(prefix="genloom-mutate-") as tmp:
        copy = copy_checkout(Path(tmp) / "genloom")
        if not args.no_baseline:
            tests = list(dict.fromkeys(t for m in chosen for t in m.tests))
            print(f"mutate: baseline: {' '.join(tests)}", file=sys.stderr)
            outcome, secs, failing = run_tests(copy, tests, args.timeout)
            if outcome != "passed":
                print(f"mutate: the unchanged code does not pass its tests ({outcome}, {secs} s): {failing}",
                      file=sys.stderr)
                return 2
            print(f"mutate: baseline passed in {secs} s", file=sys.stderr)
        for m in chosen:
            path = copy / m.file
            original = path.read_text(encoding="utf-8")
            n = original.count(m.old)
            if n != 1:
                results.append({"name": m.name, "file": m.file, "result": "stale",
                                "detail": f"snippet found {n} times", "what": m.what})
                print(f"mutate: {m.name}: stale (snippet found {n} times)", file=sys.stderr)
                continue
            try:
                path.write_text(original.replace(m.old, m.new), encoding="utf-8")
                outcome, secs, failing = run_tests(copy, m.tests, args.timeout)
            finally:
                path.write_text(original, encoding="utf-8")
            result = {"failed": "caught", "timeout": "caught", "passed": "survived"}.get(outcome, outcome)
            results.append({"name": m.name, "file": m.file, "tests": list(m.tests), "result": result,
                            "seconds": secs, "failing": failing[:5], "what": m.what})
            print(f"mutate: {m.name}: {result} ({secs} s)", file=sys.stderr)

    summary = {
        "mutants": len(results),
        "caught": sum(r["result"] == "caught" for r in results),
        "survived": [r["name"] for r in results if r["result"] == "survived"],
        "stale": [r["name"] for r in results if r["result"] == "stale"],
        "errors": [r["name"] for r in results if r["result"].startswith("error")],
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=1))
    return 1 if summary["survived"] or summary["stale"] or summary["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
