"""OHIF viewer load time: our server vs. Orthanc + DICOMweb behind the same page.

A 300-slice 512x512 CT series (Explicit VR Little Endian, `dicomweb sample`) is
imported into our server and uploaded to Orthanc (REST, POST /instances). Both
serve the same OHIF build (viewer_static/, `dicomweb viewer install`) from one
origin with DICOMweb on that origin:

- ours: `dicomweb serve --viewer-dir ...`, as shipped;
- Orthanc: nginx on a loopback port serves the viewer's files, our server's own
  generated app-config.js with the DICOMweb roots changed to /dicom-web (every
  other setting unchanged), the SPA fallback and the same COOP/COEP/CORP and
  cache headers our server sends, and proxies /dicom-web/ and /wado to Orthanc.

tests/viewer/ohif.mjs (headless Chromium through playwright-core) is run once per
measurement with a plan naming the page and the series: each run is a new
browser and a new context (empty cache) whose first step measures, from
navigation to /viewer?StudyInstanceUIDs=..., the first image on screen and every
slice loaded and decoded by Cornerstone. Runs alternate between the servers.

Usage (from the repository root):

    .venv/bin/python bench/viewer.py [--runs 3] [--out bench/results-viewer.json]
    .venv/bin/python bench/viewer.py --servers ours --slices 100
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from common import (
    REPO,
    RunningServer,
    ServerError,
    ServerSpec,
    dicomweb_binary,
    fmt,
    machine_info,
    ours_spec,
    print_table,
)
from orthanc import DICOMWEB_PLUGIN, ORTHANC_BIN, check_installed, orthanc_spec, orthanc_version

NGINX_BIN = "/usr/sbin/nginx"
CHROMIUM = "/usr/bin/chromium"
HARNESS_DIR = REPO / "tests" / "viewer"
HARNESS = HARNESS_DIR / "ohif.mjs"
DESCRIPTION = "Sample CT phantom (Explicit VR Little Endian)"
OURS_ROOT = "/dicomweb"
ORTHANC_ROOT = "/dicom-web"
SERVERS = ("ours", "orthanc")

# The viewer for Orthanc: static files, the generated app-config.js, the SPA
# fallback, and Orthanc's DICOMweb (and WADO-URI) on the same origin. The headers
# are the ones our server sends (dicomweb/viewer.py): isolation on everything,
# no-cache on index.html and app-config.js, a year on content-hashed bundles.
NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process on;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
{user}
events {{ worker_connections 512; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nodelay on;
    keepalive_timeout 120s;
    client_body_temp_path {workdir}/tmp-body;
    proxy_temp_path {workdir}/tmp-proxy;
    fastcgi_temp_path {workdir}/tmp-fastcgi;
    uwsgi_temp_path {workdir}/tmp-uwsgi;
    scgi_temp_path {workdir}/tmp-scgi;
    upstream orthanc {{
        server 127.0.0.1:{orthanc_port};
        keepalive 32;
    }}
    map $uri $cache_control {{
        "~(^|[./])[0-9a-f]{{16}}\\.(js|css|wasm|woff2?)$" "public, max-age=31536000, immutable";
        default "no-cache";
    }}
    server {{
        listen 127.0.0.1:{port};
        root {viewer_dir};
        add_header Cross-Origin-Opener-Policy same-origin always;
        add_header Cross-Origin-Embedder-Policy require-corp always;
        add_header Cross-Origin-Resource-Policy same-origin always;
        location = /nginx-health {{ return 200 "ok"; }}
        location = /app-config.js {{
            alias {workdir}/app-config.js;
            add_header Cache-Control no-cache;
            add_header Cross-Origin-Opener-Policy same-origin always;
            add_header Cross-Origin-Embedder-Policy require-corp always;
            add_header Cross-Origin-Resource-Policy same-origin always;
        }}
        location {orthanc_root}/ {{ proxy_pass http://orthanc; {proxy} }}
        location /wado {{ proxy_pass http://orthanc; {proxy} }}
        location / {{
            add_header Cache-Control $cache_control;
            add_header Cross-Origin-Opener-Policy same-origin always;
            add_header Cross-Origin-Embedder-Policy require-corp always;
            add_header Cross-Origin-Resource-Policy same-origin always;
            try_files $uri /index.html;
        }}
    }}
}}
"""
# Host with the port: Orthanc's BulkDataURIs in series metadata are built from it.
NGINX_PROXY = (
    'proxy_http_version 1.1; proxy_set_header Connection ""; '
    "proxy_set_header Host $http_host; proxy_read_timeout 300s; "
    "proxy_hide_header Cross-Origin-Resource-Policy;"
)


def nginx_spec(binary: str, viewer_dir: Path, orthanc_port: int) -> ServerSpec:
    def command(workdir: Path, _data_dir: Path, port: int, _dimse: int) -> list[str]:
        conf = workdir / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                workdir=workdir,
                user="user nobody nogroup;" if os.geteuid() == 0 else "",
                port=port,
                viewer_dir=viewer_dir,
                orthanc_port=orthanc_port,
                orthanc_root=ORTHANC_ROOT,
                proxy=NGINX_PROXY,
            )
        )
        return [binary, "-c", str(conf), "-p", str(workdir), "-e", "stderr"]

    return ServerSpec(
        key="nginx",
        label="nginx (viewer files, proxy to Orthanc)",
        stow_path="/",
        health_path="/nginx-health",
        command=command,
    )


def orthanc_app_config(ours_app_config: str) -> str:
    """Our generated app-config.js with the DICOMweb roots moved to Orthanc's."""
    old = f'"qidoRoot": "{OURS_ROOT}",\n'
    assert old in ours_app_config and f'"wadoRoot": "{OURS_ROOT}",\n' in ours_app_config
    text = ours_app_config.replace(old, f'"qidoRoot": "{ORTHANC_ROOT}",\n')
    text = text.replace(f'"wadoRoot": "{OURS_ROOT}",\n', f'"wadoRoot": "{ORTHANC_ROOT}",\n')
    return text.replace("Generated by dicomweb", "Generated by dicomweb, roots for Orthanc")


# --------------------------------------------------------------------------
# Setup
# --------------------------------------------------------------------------


def missing_prerequisites(args: argparse.Namespace) -> list[str]:
    missing = []
    if shutil.which(args.node) is None:
        missing.append("node (apt-get install nodejs npm)")
    if not Path(args.chromium).is_file():
        missing.append(f"{args.chromium} (apt-get install chromium)")
    if not (HARNESS_DIR / "node_modules" / "playwright-core").is_dir():
        missing.append("playwright-core (npm ci --prefix tests/viewer)")
    if not (args.viewer_dir / "index.html").is_file():
        missing.append(f"the OHIF viewer in {args.viewer_dir} (dicomweb viewer install)")
    if dicomweb_binary() is None:
        missing.append("dicomweb (.venv/bin/pip install -e .)")
    if "orthanc" in args.servers:
        problem = check_installed(args.orthanc_bin, args.orthanc_plugin)
        if problem:
            missing.append(problem)
        if not Path(args.nginx_bin).is_file():
            missing.append(f"{args.nginx_bin} (apt-get install nginx)")
    return missing


def study_uid(client: httpx.Client, root: str) -> str:
    resp = client.get(f"{root}/studies", params={"includefield": "StudyDescription"})
    resp.raise_for_status()
    uids = [
        s["0020000D"]["Value"][0]
        for s in resp.json()
        if s.get("00081030", {}).get("Value") == [DESCRIPTION]
    ]
    if len(uids) != 1:
        raise ServerError(f"expected one study '{DESCRIPTION}' at {root}, found {len(uids)}")
    return uids[0]


def upload_to_orthanc(base_url: str, files: list[Path]) -> None:
    with httpx.Client(base_url=base_url, timeout=120.0, trust_env=False) as client:
        for path in files:
            resp = client.post("/instances", content=path.read_bytes())
            resp.raise_for_status()


def isolation_headers(resp: httpx.Response) -> dict[str, str | None]:
    names = (
        "cross-origin-opener-policy",
        "cross-origin-embedder-policy",
        "cross-origin-resource-policy",
    )
    return {name: resp.headers.get(name) for name in names}


def check_page(base_url: str, study: str, root: str) -> dict[str, Any]:
    """The viewer route, app-config.js and one metadata request answer as the page needs."""
    with httpx.Client(base_url=base_url, timeout=60.0, trust_env=False) as client:
        page = client.get(f"/viewer?StudyInstanceUIDs={study}", headers={"Accept": "text/html"})
        config = client.get("/app-config.js")
        studies = client.get(f"{root}/studies", params={"StudyInstanceUID": study})
    for resp in (page, config, studies):
        resp.raise_for_status()
    if f'"{root}"' not in config.text:
        raise ServerError(f"{base_url}/app-config.js does not point at {root}")
    return {
        "page": isolation_headers(page),
        "app_config": isolation_headers(config),
        "dicomweb": isolation_headers(studies),
    }


# --------------------------------------------------------------------------
# Browser runs
# --------------------------------------------------------------------------


def browser_run(
    args: argparse.Namespace, url: str, study: str, artifacts: Path, workdir: Path
) -> dict[str, Any]:
    """One run of tests/viewer/ohif.mjs (a new browser); its performance step is the measurement.

    The harness goes on to open the study list, the study and the MPR layout in a
    second context: those steps are not timed here, their errors are kept as notes.
    """
    artifacts.mkdir(parents=True, exist_ok=True)
    plan = {
        "url": url,
        "artifacts": str(artifacts),
        "chromium": args.chromium,
        "studies": [
            {"name": "ct", "uid": study, "description": DESCRIPTION, "slices": args.slices}
        ],
        "performanceStudy": "ct",
        "mprStudy": "ct",
    }
    plan_path = workdir / f"plan-{artifacts.name}.json"
    plan_path.write_text(json.dumps(plan))
    started = time.perf_counter()
    try:
        run = subprocess.run(
            [args.node, str(HARNESS), str(plan_path)],
            cwd=HARNESS_DIR,
            capture_output=True,
            text=True,
            timeout=args.browser_timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"browser run timed out after {args.browser_timeout}s"}
    (artifacts / "browser.log").write_text(run.stderr)
    lines = run.stdout.strip().splitlines()
    if run.returncode != 0 or not lines:
        return {"ok": False, "error": f"harness exit {run.returncode}: {run.stderr[-2000:]}"}
    report: dict[str, Any] = json.loads(lines[-1])
    (artifacts / "report.json").write_text(json.dumps(report, indent=2))
    perf = report.get("performance")
    result: dict[str, Any] = {
        "ok": bool(perf) and perf["imagesLoaded"] >= args.slices and not perf["imagesFailed"],
        "browser_run_s": round(time.perf_counter() - started, 1),
        "cross_origin_isolated": report.get("crossOriginIsolated"),
        "console_errors": len(report.get("consoleErrors", [])),
        "error_responses": sorted(
            {f"{e['status']} {e['url'].split('?')[0]}" for e in report.get("errorResponses", [])}
        )[:10],
        "artifacts": str(artifacts),
    }
    if perf:
        result.update(
            first_image_ms=perf["firstImageMs"],
            all_slices_ms=perf["allSlicesMs"],
            metadata_requested_ms=perf["metadataRequestedMs"],
            metadata_received_ms=perf["metadataReceivedMs"],
            first_frame_requested_ms=perf["firstFrameRequestedMs"],
            images_loaded=perf["imagesLoaded"],
            images_failed=len(perf["imagesFailed"]),
        )
    if report.get("error"):
        key = "error" if not perf else "later_step_error"
        result[key] = report["error"].splitlines()[0][:500]
    return result


def median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get("ok") and r.get(key) is not None]
    return round(statistics.median(values)) if values else None


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="browser runs per server (3)")
    parser.add_argument("--slices", type=int, default=300, help="slices in the series (300)")
    parser.add_argument("--size", type=int, default=512, help="rows and columns (512)")
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help="comma-separated: ours,orthanc (both)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results-viewer.json")
    parser.add_argument(
        "--artifacts",
        type=Path,
        default=None,
        help="keep each run's screenshots, report and browser log here (default: discarded)",
    )
    parser.add_argument("--viewer-dir", type=Path, default=REPO / "viewer_static")
    parser.add_argument("--node", default="node")
    parser.add_argument("--chromium", default=CHROMIUM)
    parser.add_argument("--nginx-bin", default=NGINX_BIN)
    parser.add_argument("--orthanc-bin", default=ORTHANC_BIN)
    parser.add_argument("--orthanc-plugin", default=DICOMWEB_PLUGIN)
    parser.add_argument("--browser-timeout", type=float, default=420.0, help="seconds per run")
    args = parser.parse_args()
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(args.servers) - set(SERVERS)
    if unknown or not args.servers:
        parser.error(f"--servers: choose from {', '.join(SERVERS)}")
    args.viewer_dir = args.viewer_dir.resolve()
    return args


def main() -> int:
    args = parse_args()
    missing = missing_prerequisites(args)
    if missing:
        print("missing: " + "; ".join(missing), file=sys.stderr)
        return 2
    dicomweb = dicomweb_binary() or "dicomweb"
    results: dict[str, Any] = {
        "benchmark": "viewer",
        "machine": machine_info(),
        "series": f"{args.slices} slices, {args.size}x{args.size}, Explicit VR Little Endian",
        "runs_per_server": args.runs,
        "servers": {},
    }
    with tempfile.TemporaryDirectory(prefix="viewer-bench-") as tmp_name:
        tmp = Path(tmp_name)
        tmp.chmod(0o755)  # nginx's workers (nobody) read app-config.js below it
        artifacts_root = args.artifacts.resolve() if args.artifacts else tmp / "artifacts"
        sample = tmp / "sample"
        print(f"generating {results['series']} ...", flush=True)
        subprocess.run(
            [
                *(dicomweb, "sample", str(sample), "--slices", str(args.slices)),
                *("--size", str(args.size), "--syntax", "explicit"),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        files = sorted(p for p in sample.rglob("*") if p.is_file())
        if len(files) != args.slices:
            print(f"expected {args.slices} files in {sample}, found {len(files)}", file=sys.stderr)
            return 1

        # Our server always runs: Orthanc's page uses its generated app-config.js.
        data_dir = tmp / "ours-data"
        subprocess.run(
            [dicomweb, "import", "--data-dir", str(data_dir), "--quiet", str(sample)], check=True
        )
        ours = RunningServer(
            ours_spec(extra_args=["--viewer-dir", str(args.viewer_dir)]),
            tmp / "ours",
            fresh=False,
            data_dir=data_dir,
        )
        orthanc: RunningServer | None = None
        nginx: RunningServer | None = None
        try:
            ours.start()
            pages: dict[str, tuple[str, str]] = {}
            with httpx.Client(base_url=ours.base_url, timeout=60.0, trust_env=False) as client:
                uid = study_uid(client, OURS_ROOT)
                app_config = client.get("/app-config.js").raise_for_status().text
            pages["ours"] = (ours.base_url, uid)
            results["servers"]["ours"] = {
                "label": "ours (dicomweb serve)",
                "page": ours.base_url,
                "headers": check_page(ours.base_url, uid, OURS_ROOT),
            }
            if "orthanc" in args.servers:
                orthanc = RunningServer(
                    orthanc_spec(args.orthanc_bin, args.orthanc_plugin), tmp / "orthanc"
                )
                orthanc.start()
                print(f"uploading {len(files)} files to Orthanc ...", flush=True)
                upload_to_orthanc(orthanc.base_url, files)
                nginx_dir = tmp / "nginx"
                nginx_dir.mkdir(mode=0o755)
                (nginx_dir / "app-config.js").write_text(orthanc_app_config(app_config))
                (nginx_dir / "app-config.js").chmod(0o644)
                nginx = RunningServer(
                    nginx_spec(args.nginx_bin, args.viewer_dir, orthanc.port), nginx_dir
                )
                nginx.start()
                with httpx.Client(base_url=nginx.base_url, timeout=60.0, trust_env=False) as c:
                    orthanc_uid = study_uid(c, ORTHANC_ROOT)
                pages["orthanc"] = (nginx.base_url, orthanc_uid)
                results["servers"]["orthanc"] = {
                    "label": f"Orthanc {orthanc_version(args.orthanc_bin)} + DICOMweb "
                    "(viewer via nginx)",
                    "page": nginx.base_url,
                    "headers": check_page(nginx.base_url, orthanc_uid, ORTHANC_ROOT),
                }
            for key in SERVERS:
                if key not in args.servers:
                    results["servers"].pop(key, None)
                else:
                    results["servers"][key]["runs"] = []
            work = tmp / "plans"
            work.mkdir()
            for n in range(1, args.runs + 1):
                for key in args.servers:  # alternating, so that noise hits both alike
                    url, uid = pages[key]
                    print(f"run {n}/{args.runs}: {key} ({url}) ...", flush=True)
                    run = browser_run(args, url, uid, artifacts_root / f"{key}-{n}", work)
                    results["servers"][key]["runs"].append(run)
                    print(
                        f"  first image {fmt(run.get('first_image_ms'), ' ms')}, all slices "
                        f"{fmt(run.get('all_slices_ms'), ' ms')}"
                        + ("" if run["ok"] else f"  FAILED: {run.get('error')}"),
                        flush=True,
                    )
        finally:
            for server in (nginx, orthanc, ours):
                if server is not None:
                    server.stop()
        results["machine"]["loadavg_after"] = machine_info()["loadavg"]

    lines = [["server", "first image (median)", "all slices (median)", "runs ok", "per run"]]
    for entry in results["servers"].values():
        runs = entry["runs"]
        entry["median_first_image_ms"] = median(runs, "first_image_ms")
        entry["median_all_slices_ms"] = median(runs, "all_slices_ms")
        entry["median_metadata_received_ms"] = median(runs, "metadata_received_ms")
        per_run = ", ".join(
            f"{fmt(r.get('first_image_ms'))}/{fmt(r.get('all_slices_ms'))}" for r in runs
        )
        lines.append(
            [
                entry["label"],
                fmt(entry["median_first_image_ms"], " ms"),
                fmt(entry["median_all_slices_ms"], " ms"),
                f"{sum(r['ok'] for r in runs)}/{len(runs)}",
                per_run,
            ]
        )
    print(f"\nOHIF: navigation to first image / to all slices loaded ({results['series']})")
    print_table(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults: {args.out}")
    ok = all(r["ok"] for e in results["servers"].values() for r in e["runs"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
