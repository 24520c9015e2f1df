"""``svp coreset``: queue a core-set selection job over HTTP, follow it with a progress bar on stderr,
print the summary table (and optionally write each subset as CSV).

    svp coreset --url http://127.0.0.1:8000 --key $KEY --project 3 --method forgetting_events \\
        --fractions 0.3,0.5,0.7 --proxy preact20 --epochs 50 --train-target --full-data --follow
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import httpx

METHODS = ("forgetting_events", "entropy", "kcenters", "random")
FINISHED = ("succeeded", "failed", "cancelled")
BAR_WIDTH = 30


class ApiError(RuntimeError):
    pass


def _numbers(text: str | None, kind: type) -> list:
    if not text:
        return []
    try:
        return [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got {text!r}") from None


def build_request(args: argparse.Namespace) -> dict[str, Any]:
    """The POST body from the command line; the service validates it (and says what is wrong)."""
    body: dict[str, Any] = {"method": args.method, "fractions": _numbers(args.fractions, float),
                            "sizes": _numbers(args.sizes, int)}
    if args.proxy or args.epochs or args.batch_size:
        if not args.proxy:
            raise argparse.ArgumentTypeError("--epochs / --batch-size need --proxy (the architecture)")
        body["proxy"] = {"arch": args.proxy, **({"epochs": args.epochs} if args.epochs else {}),
                         **({"batch_size": args.batch_size} if args.batch_size else {})}
    if args.seed is not None:
        body["seed"] = args.seed
    if args.kcenters_initial is not None:
        body["kcenters_initial"] = args.kcenters_initial
    if args.train_target:
        body["train_target"] = True
        body["random_baseline"] = not args.no_random_baseline
        body["full_data"] = args.full_data
        if args.target or args.target_epochs:
            if not args.target:
                raise argparse.ArgumentTypeError("--target-epochs needs --target (the architecture)")
            body["target"] = {"arch": args.target, **({"epochs": args.target_epochs} if args.target_epochs else {})}
    elif args.full_data or args.target or args.no_random_baseline:
        raise argparse.ArgumentTypeError("--full-data, --target and --no-random-baseline need --train-target")
    return body


def progress_line(job: dict[str, Any]) -> str:
    """``[#########.....................]  31% training proxy (epoch 3)``"""
    progress = job.get("progress") or {}
    fraction = 1.0 if job.get("status") == "succeeded" else float(progress.get("fraction") or 0.0)
    fraction = min(1.0, max(0.0, fraction))
    filled = int(round(fraction * BAR_WIDTH))
    phase = progress.get("phase") or job.get("status", "")
    epoch = f" (epoch {progress['epoch'] + 1})" if isinstance(progress.get("epoch"), int) else ""
    return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {fraction * 100:3.0f}% {phase}{epoch}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def summary_table(job: dict[str, Any]) -> str:
    """The outcome as text: selection time, one row per subset, the full-data target, Spearman."""
    lines = []
    proxy = (job.get("proxy") or {}).get("arch", "none")
    lines.append(f"core-set job {job['job_id']}: {job['method']} (proxy {proxy}, seed {job['seed']}) over "
                 f"{job['labeled']} labeled items: {job['status']}")
    selection = job.get("selection")
    if selection:
        lines.append(f"data selection {selection['total_s']:.1f} s (proxy training {selection['train_s']:.1f}, "
                     f"scoring {selection['inference_s']:.1f}, ranking {selection['ranking_s']:.1f})")
    if job.get("proxy_metrics", {}).get("accuracy") is not None:
        lines.append(f"proxy test accuracy {_pct(job['proxy_metrics']['accuracy'])}")
    header = ["subset", "fraction", "size", "target acc", "random acc", "target s", "end-to-end s", "speed-up"]
    rows = [header]
    for subset in job.get("subsets") or []:
        target, rnd = subset.get("target") or {}, subset.get("random") or {}
        rows.append([
            str(subset["index"]), "-" if subset.get("fraction") is None else f"{subset['fraction']:g}",
            str(subset["size"]), _pct(target.get("accuracy")), _pct(rnd.get("accuracy")), _secs(target.get("train_s")),
            _secs(subset.get("end_to_end_s")), "-" if subset.get("speedup") is None else f"{subset['speedup']:.2f}×",
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    full = job.get("full")
    if full:
        lines.append(f"full data ({full['size']} items): target accuracy {_pct(full.get('accuracy'))}, "
                     f"trained in {full['train_s']:.1f} s")
    if job.get("spearman_proxy_target") is not None:
        lines.append(f"Spearman rank correlation, proxy vs target ranking: {job['spearman_proxy_target']:.3f}")
    for note in job.get("notes") or []:
        lines.append(f"note: {note}")
    if job.get("error"):
        lines.append(f"error: {job['error'].splitlines()[0]}")
    return "\n".join(lines)


class Client:
    def __init__(self, url: str, key: str, timeout: float = 60.0):
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout)

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                details = "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg', d)}"
                                    if isinstance(d, dict) else str(d) for d in error.get("details") or [])
                message = error["message"] + (f" ({details})" if details else "")
            except (ValueError, KeyError, TypeError):
                message = response.text[:500]
            raise ApiError(f"{method} {path} -> {response.status_code}: {message}")
        return response

    def close(self) -> None:
        self.http.close()


def follow(client: Client, project: int, job_id: int, *, poll_s: float, out: TextIO) -> dict[str, Any]:
    """Poll the job until it finishes, redrawing the bar (in place on a terminal, a line per change
    otherwise)."""
    tty = out.isatty()
    last = None
    while True:
        job = client.request("GET", f"/projects/{project}/coresets/{job_id}").json()
        line = progress_line(job)
        if tty:
            out.write("\r" + line.ljust(BAR_WIDTH + 60))
        elif line != last:
            out.write(line + "\n")
        out.flush()
        last = line
        if job["status"] in FINISHED:
            if tty:
                out.write("\n")
            return job
        time.sleep(poll_s)


def write_csvs(client: Client, project: int, job: dict[str, Any], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for subset in job["subsets"]:
        response = client.request("GET", subset["url"], params={"format": "csv"})
        path = directory / f"coreset-{job['job_id']}-{subset['size']}.csv"
        path.write_text(response.text)
        paths.append(path)
    return paths


def run(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        body = build_request(args)
    except argparse.ArgumentTypeError as exc:
        err.write(f"svp coreset: {exc}\n")
        return 2
    client = Client(args.url, args.key)
    try:
        job = client.request("POST", f"/projects/{args.project}/coresets", json=body).json()
        err.write(f"core-set job {job['job_id']} queued: {job['method']}, subsets of "
                  f"{', '.join(str(s['size']) for s in job['subsets'])} of {job['labeled']} labeled items\n")
        if not args.follow:
            out.write(f"{job['job_id']}\n")
            return 0
        try:
            job = follow(client, args.project, job["job_id"], poll_s=args.poll, out=err)
        except KeyboardInterrupt:
            err.write(f"\nstopped following; job {job['job_id']} keeps running (POST /jobs/{job['job_id']}/cancel "
                      "to stop it)\n")
            return 130
        out.write(summary_table(job) + "\n")
        if job["status"] == "succeeded" and args.csv_dir:
            for path in write_csvs(client, args.project, job, Path(args.csv_dir)):
                out.write(f"wrote {path}\n")
        return 0 if job["status"] == "succeeded" else 1
    except (ApiError, httpx.HTTPError) as exc:
        err.write(f"svp coreset: {exc}\n")
        return 2
    finally:
        client.close()


def add_coreset_command(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("coreset", help="core-set selection over a labeled project: rank, keep the top, compare")
    parser.add_argument("--url", required=True, help="the service, e.g. http://127.0.0.1:8000")
    parser.add_argument("--key", required=True, help="an admin API key")
    parser.add_argument("--project", type=int, required=True)
    parser.add_argument("--method", required=True, choices=METHODS)
    parser.add_argument("--fractions", default=None, help="subset sizes as fractions of the labeled pool: 0.3,0.5")
    parser.add_argument("--sizes", default=None, help="subset sizes as item counts: 1000,5000")
    parser.add_argument("--proxy", default=None, help="proxy architecture (default: the project's proxy)")
    parser.add_argument("--epochs", type=int, default=None, help="proxy epochs")
    parser.add_argument("--batch-size", type=int, default=None, help="proxy batch size")
    parser.add_argument("--seed", type=int, default=None, help="default: the project's seed")
    parser.add_argument("--kcenters-initial", type=int, default=None, help="kcenters start-set size (paper: 1000)")
    parser.add_argument("--train-target", action="store_true", help="train the target on each subset and evaluate it")
    parser.add_argument("--target", default=None, help="target architecture (default: the project's target)")
    parser.add_argument("--target-epochs", type=int, default=None)
    parser.add_argument("--no-random-baseline", action="store_true", help="skip the random subsets of the same sizes")
    parser.add_argument("--full-data", action="store_true", help="also train the target on all labeled items "
                        "(for the end-to-end speed-up and the target's ranking)")
    parser.add_argument("--follow", action="store_true", help="show progress until the job ends, then the summary")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between progress polls")
    parser.add_argument("--csv-dir", default=None, help="with --follow: write each subset's CSV here")
    parser.set_defaults(func=run)
