#!/usr/bin/env python3
"""Load this node pack in a real ComfyUI and run the example workflow on the CPU.

    python scripts/comfyui_smoke.py /path/to/ComfyUI        # or COMFYUI_DIR=/path/to/ComfyUI
    python scripts/comfyui_smoke.py --json report.json      # also write the checks as JSON

Run it with the Python that runs ComfyUI (ComfyUI's requirements plus this package:
`pip install -e <this repo>`, or its requirements.txt as ComfyUI-Manager installs it). It never touches
the ComfyUI checkout: ComfyUI starts with `--base-directory` pointing at a scratch
folder whose `custom_nodes/latentsync-runner` links to this repository (the way users
install the pack) and whose `input/` holds the example assets. Then it

1. starts `main.py --cpu` headless on a free loopback port and reads ComfyUI's own
   custom-node import report (our pack loaded, no IMPORT FAILED, import time);
2. reads `/object_info`: the three nodes, their display names and inputs;
3. turns `examples/comfyui_workflow.json` (the UI format users drag in) into the
   API format the way the frontend does (widgets in input order, `control_after_generate`
   after a seed, muted nodes left out) and checks every node type, link type and
   combo value against `/object_info`; compares it with `examples/comfyui_workflow_api.json`;
4. queues it through `/prompt` (ComfyUI's own validation and execution engine) with
   `random-small` weights and follows the websocket: progress of the LatentSync node,
   success; then reads the saved video (frame count, audio length) and the previews
   (the plan output ends with the job report, valid against its schema);
5. queues it again with another seed and presses ComfyUI's interrupt after the first
   chunk: the run must end as "interrupted", not as an error.

Prints a table of checks and exits 1 if any failed (2 if ComfyUI could not start).
"""
from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / "examples" / "comfyui_workflow.json"
WORKFLOW_API = REPO / "examples" / "comfyui_workflow_api.json"
ASSETS = ("quickstart.mp4", "quickstart_speech.wav")
PACK_DIR_NAME = "latentsync-runner"
OUR_NODES = {
    "LatentSyncRunner": "LatentSync",
    "LatentSyncRunnerAutoOptimize": "LatentSync Auto-Optimize",
    "LatentSyncRunnerGPUBenchmark": "LatentSync GPU Benchmark",
}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SEED_NAMES = {"seed", "noise_seed"}  # the frontend adds a control_after_generate widget after these
MUTED_MODES = {2, 4}  # 2: muted (never), 4: bypassed
IMPORT_LIMIT_S = 1.0
AUDIO_PROBE_ID = "9001"
QUICK_AUDIO_S = 2.03  # 4 chunks of frames, and not a whole number of frames: the audio must be trimmed
QUICK_STEPS = 2


class SmokeError(Exception):
    """A check that cannot go on (ComfyUI did not start, the workflow does not convert)."""


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    seconds: Optional[float] = None


@dataclass
class Report:
    comfyui_dir: str
    comfyui_version: str = "?"
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, ok: bool, detail: str, seconds: Optional[float] = None) -> bool:
        self.checks.append(Check(name, bool(ok), detail, seconds))
        return bool(ok)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    def table(self) -> str:
        width = max(len(check.name) for check in self.checks) if self.checks else 10
        lines = [f"ComfyUI {self.comfyui_version} at {self.comfyui_dir}", ""]
        for check in self.checks:
            took = f"{check.seconds:7.2f} s" if check.seconds is not None else " " * 9
            lines.append(f"{'ok  ' if check.ok else 'FAIL'}  {check.name:<{width}}  {took}  {check.detail}")
        lines.append("")
        lines.append(f"{sum(c.ok for c in self.checks)} passed, {sum(not c.ok for c in self.checks)} failed")
        return "\n".join(lines)


# ---------------------------------------------------------------- UI format -> API format


def _input_spec(node_info: dict, name: str) -> Optional[list]:
    for group in ("required", "optional"):
        spec = node_info.get("input", {}).get(group, {}).get(name)
        if spec is not None:
            return spec
    return None


def _input_kind(spec: list) -> str:
    kind = spec[0]
    return "COMBO" if isinstance(kind, list) else str(kind)


def _combo_options(spec: list) -> Optional[list]:
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        return spec[1].get("options")
    return None


def _has_widget(name: str, spec: list) -> bool:
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return _input_kind(spec) in WIDGET_TYPES and not options.get("forceInput")


def _has_control_widget(name: str, spec: list) -> bool:
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if _input_kind(spec) != "INT":
        return False
    return bool(options.get("control_after_generate", name in SEED_NAMES))


def _types_match(output_type: str, input_type: str) -> bool:
    if "*" in (output_type, input_type):
        return True
    return bool(set(output_type.split(",")) & set(input_type.split(",")))


def workflow_to_prompt(workflow: dict, object_info: dict) -> dict:
    """A UI-format workflow (what the canvas saves) -> the API-format prompt `/prompt` takes.

    Follows the frontend's rules: widget values are stored in the order of the node's
    widget inputs (inputs with `forceInput` have none), an INT input named seed carries
    a second value (control_after_generate), upload widgets add trailing values that are
    not inputs. Muted and bypassed nodes are left out (no link in this workflow passes
    through a bypassed node). Raises SmokeError naming the node and field at fault.
    """
    nodes = {node["id"]: node for node in workflow.get("nodes", [])}
    links = {link[0]: link for link in workflow.get("links", [])}
    prompt: dict[str, Any] = {}
    for node_id, node in sorted(nodes.items()):
        where = f"node {node_id} ({node.get('type')})"
        if node.get("mode", 0) in MUTED_MODES:
            continue
        info = object_info.get(node["type"])
        if info is None:
            raise SmokeError(f"{where}: type is not a node in this ComfyUI")
        order = info.get("input_order") or {g: list(info["input"].get(g, {})) for g in ("required", "optional")}
        names = list(order.get("required", [])) + list(order.get("optional", []))
        linked = {slot["name"]: slot for slot in node.get("inputs", []) if slot.get("link") is not None}
        values = list(node.get("widgets_values") or [])
        inputs: dict[str, Any] = {}
        position = 0
        for name in names:
            spec = _input_spec(info, name)
            widget = _has_widget(name, spec)
            if widget:
                if position >= len(values):
                    raise SmokeError(f"{where}: widgets_values has no value for {name!r} "
                                     f"({len(values)} values for the node's widgets)")
                value = values[position]
                position += 1 + (1 if _has_control_widget(name, spec) else 0)
                options = _combo_options(spec)
                if name not in linked:
                    if options is not None and value not in options:
                        raise SmokeError(f"{where}: widgets_values {name}={value!r} is not one of {options}")
                    inputs[name] = value
            if name in linked:
                link = links.get(linked[name]["link"])
                if link is None:
                    raise SmokeError(f"{where}: input {name!r} names link {linked[name]['link']}, not in links")
                _, from_id, from_slot, to_id, _, link_type = link
                source = nodes.get(from_id)
                if source is None or to_id != node_id:
                    raise SmokeError(f"{where}: link {link[0]} for {name!r} does not join existing nodes")
                if source.get("mode", 0) in MUTED_MODES:
                    if name in order.get("required", []):
                        raise SmokeError(f"{where}: required input {name!r} comes from muted node {from_id}")
                    continue
                source_info = object_info[source["type"]]
                output_type = source_info["output"][from_slot]
                if not _types_match(output_type, _input_kind(spec)) or not _types_match(link_type, _input_kind(spec)):
                    raise SmokeError(f"{where}: input {name!r} ({_input_kind(spec)}) is linked to "
                                     f"{source['type']} output {from_slot} ({output_type}, link says {link_type})")
                inputs[name] = [str(from_id), int(from_slot)]
            elif not widget and name in order.get("required", []):
                raise SmokeError(f"{where}: required input {name!r} is neither linked nor a widget")
        prompt[str(node_id)] = {"class_type": node["type"], "inputs": inputs,
                                "_meta": {"title": node.get("title") or info.get("display_name", node["type"])}}
    return prompt


# ---------------------------------------------------------------- ComfyUI process


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def prepare_base_directory(base: Path) -> None:
    """A scratch ComfyUI base folder: our pack in custom_nodes/, the example assets in input/."""
    (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
    (base / "input").mkdir(exist_ok=True)
    (base / "custom_nodes" / PACK_DIR_NAME).symlink_to(REPO, target_is_directory=True)
    for name in ASSETS:
        shutil.copyfile(REPO / "examples" / "assets" / name, base / "input" / name)


class ComfyProcess:
    """`python main.py --cpu` in a subprocess, its log collected to a file."""

    def __init__(self, comfyui_dir: Path, base: Path, python: str):
        self.comfyui_dir, self.base, self.python = comfyui_dir, base, python
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "comfyui.log"
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> None:
        command = [self.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                   "--disable-auto-launch", "--base-directory", str(self.base),
                   "--database-url", "sqlite:///:memory:", "--log-stdout"]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._log = open(self.log_path, "w", encoding="utf-8")
        self.process = subprocess.Popen(command, cwd=self.comfyui_dir, stdout=self._log,
                                        stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if getattr(self, "_log", None) is not None:
            self._log.close()


async def wait_until_up(session, comfy: ComfyProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if comfy.process.poll() is not None:
            raise SmokeError(f"ComfyUI exited with {comfy.process.returncode} while starting; "
                             f"last log lines:\n{_tail(comfy.log())}")
        try:
            async with session.get(comfy.url + "/system_stats") as response:
                if response.status == 200:
                    return
        except Exception:  # not listening yet
            pass
        await asyncio.sleep(0.5)
    raise SmokeError(f"ComfyUI did not answer within {timeout:g} s; last log lines:\n{_tail(comfy.log())}")


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.splitlines()[-lines:])


def parse_import_report(log: str, pack: str = PACK_DIR_NAME) -> Optional[tuple[float, bool]]:
    """(seconds, failed) for our pack from ComfyUI's "Import times for custom nodes" report."""
    for match in re.finditer(r"^\s*([0-9.]+) seconds( \(IMPORT FAILED\))?: (.+)$", log, re.MULTILINE):
        if Path(match.group(3).strip()).name == pack:
            return float(match.group(1)), bool(match.group(2))
    return None


# ---------------------------------------------------------------- running a prompt


@dataclass
class PromptRun:
    prompt_id: str
    outcome: str  # success | error | interrupted | timeout
    seconds: float
    progress: list[dict] = field(default_factory=list)
    executed: list[str] = field(default_factory=list)
    outputs: dict[str, dict] = field(default_factory=dict)  # node id -> its UI output, from "executed"
    error: Optional[dict] = None


async def queue_and_follow(session, url: str, prompt: dict, *, timeout: float,
                           interrupt_on: Optional[str] = None) -> PromptRun:
    """Queue `prompt` and follow its websocket events until it ends. With `interrupt_on` (a
    node id), POST /interrupt as soon as that node reports its first progress."""
    client_id = uuid.uuid4().hex
    async with session.ws_connect(f"{url.replace('http', 'ws', 1)}/ws?clientId={client_id}") as ws:
        started = time.monotonic()
        async with session.post(url + "/prompt", json={"prompt": prompt, "client_id": client_id}) as response:
            body = await response.json()
            if response.status != 200:
                raise SmokeError(f"/prompt refused the workflow ({response.status}): {json.dumps(body)[:2000]}")
        run = PromptRun(prompt_id=body["prompt_id"], outcome="timeout", seconds=0.0)
        interrupted = False
        while time.monotonic() - started < timeout:
            try:
                message = await ws.receive(timeout=max(1.0, timeout - (time.monotonic() - started)))
            except asyncio.TimeoutError:
                break
            if message.type.name != "TEXT":
                if message.type.name in ("CLOSED", "ERROR"):
                    break
                continue  # binary previews
            event = json.loads(message.data)
            kind, data = event.get("type"), event.get("data") or {}
            if data.get("prompt_id") not in (None, run.prompt_id):
                continue
            if kind == "progress":
                run.progress.append(data)
                if interrupt_on is not None and not interrupted and str(data.get("node")) == interrupt_on:
                    async with session.post(url + "/interrupt", json={}) as response:
                        interrupted = response.status == 200
            elif kind == "executed":
                run.executed.append(str(data.get("node")))
                run.outputs[str(data.get("node"))] = data.get("output") or {}
            elif kind == "execution_success":
                run.outcome = "success"
                break
            elif kind == "execution_error":
                run.outcome, run.error = "error", data
                break
            elif kind == "execution_interrupted":
                run.outcome = "interrupted"
                break
        run.seconds = time.monotonic() - started
        return run


async def history(session, url: str, prompt_id: str, wait: float = 15.0) -> dict:
    """The prompt's history entry. ComfyUI stores it after sending execution_success: poll."""
    deadline = time.monotonic() + wait
    while True:
        async with session.get(f"{url}/history/{prompt_id}") as response:
            entry = (await response.json()).get(prompt_id)
        if entry or time.monotonic() > deadline:
            return entry or {}
        await asyncio.sleep(0.2)


def probe_video(path: Path) -> tuple[int, float, float]:
    """(video frames, fps, audio seconds) of a saved video, decoded with PyAV."""
    import av

    with av.open(str(path)) as container:
        video = container.streams.video[0]
        fps = float(video.average_rate)
        frames = sum(1 for _ in container.decode(video=0))
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return frames, fps, 0.0
        audio = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(audio=0))
        return frames, fps, samples / float(audio.sample_rate)


def _write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def probe_audio(path: Path) -> tuple[int, int]:
    """(samples per channel, sample rate) of a saved audio file."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return sum(frame.samples for frame in container.decode(audio=0)), int(stream.sample_rate)


def _wav_seconds(path: Path) -> float:
    import wave

    with wave.open(str(path), "rb") as reader:
        return reader.getnframes() / reader.getframerate()


def _audio_input(prompt: dict) -> Optional[str]:
    for node in prompt.values():
        if node["class_type"] == "LoadAudio" and isinstance(node["inputs"].get("audio"), str):
            return node["inputs"]["audio"]
    return None


def _preview_text(outputs: dict, node_id: str) -> str:
    text = (outputs.get(node_id) or {}).get("text") or []
    return "\n".join(str(part) for part in text)


def job_report_in(plan_text: str) -> tuple[Optional[dict], str]:
    """(the job report at the end of the LatentSync node's plan output, what is wrong with it or "").

    The node ends its plan STRING with `latentsync.comfy.nodes.JOB_REPORT_HEADER` and the job
    report as JSON, the report `latentsync-run` writes beside its output; it must validate
    against schemas/job_report.schema.json. Imports this package (ComfyUI's Python has it)."""
    from latentsync.comfy.nodes import JOB_REPORT_HEADER
    from latentsync.contracts import schema_errors

    lines = plan_text.splitlines()
    if JOB_REPORT_HEADER not in lines:
        return None, f"no {JOB_REPORT_HEADER!r} line"
    body = "\n".join(lines[lines.index(JOB_REPORT_HEADER) + 1:])
    try:
        data = json.loads(body)
    except json.JSONDecodeError as error:
        return None, f"the job report is not JSON ({error})"
    if not isinstance(data, dict):
        return None, "the job report is not a JSON object"
    problems = schema_errors(data, "job_report")
    return data, "; ".join(problems[:3])


def _node_ids(prompt: dict, class_type: str) -> list[str]:
    return [node_id for node_id, node in prompt.items() if node["class_type"] == class_type]


def _linked_preview(prompt: dict, source_id: str) -> Optional[str]:
    for node_id, node in prompt.items():
        if node["class_type"] == "PreviewAny" and node["inputs"].get("source", [None])[0] == source_id:
            return node_id
    return None


# ---------------------------------------------------------------- the checks


def write_trimmed_wav(source: Path, target: Path, seconds: float) -> float:
    """The first `seconds` of a PCM WAV file as a new file; returns the length written."""
    import wave

    with wave.open(str(source), "rb") as reader:
        params = reader.getparams()
        keep = min(params.nframes, int(round(seconds * params.framerate)))
        data = reader.readframes(keep)
    with wave.open(str(target), "wb") as writer:
        writer.setparams(params)
        writer.writeframes(data)
    return keep / params.framerate


def shorten_run(prompt: dict, base: Path, *, audio_seconds: Optional[float], steps: int) -> Optional[float]:
    """Make the run quick: a shorter speech clip for LoadAudio and fixed steps on the LatentSync
    node (an explicit node value wins over the run plan). Returns the audio length used, if cut."""
    used = None
    if audio_seconds:
        for node in prompt.values():
            if node["class_type"] == "LoadAudio" and isinstance(node["inputs"].get("audio"), str):
                source = base / "input" / node["inputs"]["audio"]
                target = source.with_name(f"{source.stem}_{audio_seconds:g}s{source.suffix}")
                used = write_trimmed_wav(source, target, audio_seconds)
                node["inputs"]["audio"] = target.name
    if steps:
        for node in prompt.values():
            if node["class_type"] == "LatentSyncRunner":
                node["inputs"]["inference_steps"] = int(steps)
    return used


async def smoke(comfyui_dir: Path, python: str, *, timeout: float, keep: bool, report: Report,
                interrupt: bool = True, audio_seconds: Optional[float] = None, steps: int = 0,
                write_api: Optional[Path] = None) -> None:
    import aiohttp

    base = Path(tempfile.mkdtemp(prefix="latentsync-comfy-"))
    prepare_base_directory(base)
    comfy = ComfyProcess(comfyui_dir, base, python)
    try:
        started = time.perf_counter()
        comfy.start()
        async with aiohttp.ClientSession() as session:
            await wait_until_up(session, comfy, timeout=min(timeout, 300))
            report.add("comfyui started (--cpu)", True, f"{comfy.url}, base {base}", time.perf_counter() - started)
            version = re.search(r"ComfyUI version: (\S+)", comfy.log())
            report.comfyui_version = version.group(1) if version else "?"

            imported = parse_import_report(comfy.log())
            if imported is None:
                report.add("pack imported by ComfyUI's loader", False,
                           f"{PACK_DIR_NAME} not in ComfyUI's custom-node import report")
            else:
                seconds, failed = imported
                report.add("pack imported by ComfyUI's loader", not failed,
                           "IMPORT FAILED (see the log)" if failed else f"custom_nodes/{PACK_DIR_NAME}", seconds)
                report.add(f"pack import < {IMPORT_LIMIT_S:g} s", seconds < IMPORT_LIMIT_S,
                           f"{seconds:.1f} s as ComfyUI reports it (one decimal)")
            tracebacks = [line for line in comfy.log().splitlines() if "latentsync" in line.lower()
                          and ("Traceback" in line or "Error" in line or "Cannot import" in line)]
            report.add("no pack errors in ComfyUI's log", not tracebacks, "; ".join(tracebacks[:3]) or "none")

            async with session.get(comfy.url + "/object_info") as response:
                object_info = await response.json()
            found = {key: object_info.get(key, {}).get("display_name") for key in OUR_NODES}
            report.add("nodes registered (/object_info)", found == OUR_NODES,
                       ", ".join(f"{key} = {name!r}" for key, name in found.items()))

            workflow = json.loads(WORKFLOW.read_text(encoding="utf-8"))
            try:
                prompt = workflow_to_prompt(workflow, object_info)
                report.add("workflow JSON -> API prompt", True,
                           f"{len(prompt)} nodes: " + ", ".join(sorted({n['class_type'] for n in prompt.values()})))
            except SmokeError as error:
                report.add("workflow JSON -> API prompt", False, str(error))
                return
            if write_api is not None:
                _write_json_atomic(write_api, prompt)
                report.add("API prompt written", True, str(write_api))
            if WORKFLOW_API.exists():
                shipped = json.loads(WORKFLOW_API.read_text(encoding="utf-8"))
                strip = lambda p: {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in p.items()}
                report.add("examples/comfyui_workflow_api.json matches", strip(shipped) == strip(prompt),
                           "same nodes, inputs and links as the converted UI workflow"
                           if strip(shipped) == strip(prompt) else "differs from the converted UI workflow")

            lipsync_ids = _node_ids(prompt, "LatentSyncRunner")
            if not lipsync_ids:
                report.add("workflow runs", False, "no LatentSyncRunner node in the workflow")
                return
            lipsync_id = lipsync_ids[0]
            used_audio_s = shorten_run(prompt, base, audio_seconds=audio_seconds, steps=steps)
            if used_audio_s is not None or steps:
                speech = f"speech cut to {used_audio_s:g} s" if used_audio_s is not None else "full speech"
                report.add("quick run", True,
                           speech + (f", inference_steps {steps} on the LatentSync node" if steps else ""))
            # A probe the example does not have: SaveAudio writes the node's AUDIO output losslessly
            # (FLAC), so its length can be checked to the sample.
            probe = dict(prompt, **{AUDIO_PROBE_ID: {"class_type": "SaveAudio", "inputs": {
                "audio": [lipsync_id, 1], "filename_prefix": "latentsync_smoke/audio"}}})
            run = await queue_and_follow(session, comfy.url, probe, timeout=timeout)
            detail = run.outcome if run.error is None else (
                f"{run.error.get('node_type')}: {run.error.get('exception_type')}: {run.error.get('exception_message')}")
            if not report.add("workflow runs (/prompt)", run.outcome == "success", detail, run.seconds):
                if run.error:
                    print("".join(run.error.get("traceback") or []), file=sys.stderr)
                return
            ours = [p for p in run.progress if str(p.get("node")) == lipsync_id]
            report.add("progress bar updates (LatentSync node)", bool(ours),
                       f"{len(ours)} updates: " + ", ".join(f"{p['value']}/{p['max']}" for p in ours[:8]))

            outputs = dict((await history(session, comfy.url, run.prompt_id)).get("outputs", {}))
            for node_id, output in run.outputs.items():
                outputs.setdefault(node_id, output)
            plan_preview = _linked_preview(prompt, lipsync_id)
            plan_text = _preview_text(outputs, plan_preview) if plan_preview else ""
            stated = re.search(r"LatentSync: (\d+) frames at ([0-9.]+) fps", plan_text)
            report.add("plan STRING output", bool(stated) and "rule" in plan_text.lower(),
                       (plan_text.splitlines()[0] if plan_text else "no text in the Preview Any node")
                       + f" ({len(plan_text.splitlines())} lines)")
            job_report, problem = job_report_in(plan_text)
            report.add("plan output ends with the job report", job_report is not None and not problem,
                       problem or f"status {job_report.get('status')}, stages "
                       + ", ".join(job_report.get("timings", {})))
            optimize_ids = _node_ids(prompt, "LatentSyncRunnerAutoOptimize")
            if optimize_ids:
                info_preview = _linked_preview(prompt, optimize_ids[0])
                info_text = _preview_text(outputs, info_preview) if info_preview else ""
                report.add("Auto-Optimize plan used by LatentSync", "connected run plan" in plan_text,
                           (info_text.splitlines()[0] if info_text else "no info text") + "; plan says: "
                           + next((line for line in plan_text.splitlines() if line.startswith("settings:")), "?"))

            videos = sorted((base / "output").rglob("*.mp4"))
            if not videos:
                report.add("saved video (IMAGE + AUDIO outputs)", False, f"no .mp4 under {base / 'output'}")
            else:
                frames, fps, audio_s = probe_video(videos[-1])
                expected = int(stated.group(1)) if stated else None
                covered = int(round(used_audio_s * fps)) if used_audio_s is not None else expected
                report.add("IMAGE output frame count", expected is not None and frames == expected == covered,
                           f"{frames} frames in {videos[-1].name} at {fps:g} fps; plan says {expected}"
                           + (f"; the {used_audio_s:g} s of speech cover {covered}" if used_audio_s else ""))
                video_s = frames / fps if fps else 0.0
                # AAC adds up to a frame of priming/padding: the mp4 only shows the audio came along
                report.add("saved video has the audio", abs(audio_s - video_s) <= 1.0 / fps + 0.06,
                           f"audio {audio_s:.3f} s vs {frames} frames / {fps:g} fps = {video_s:.3f} s")
                flacs = sorted((base / "output").rglob("*.flac"))
                speech_s = _wav_seconds(base / "input" / _audio_input(prompt)) if _audio_input(prompt) else None
                if not flacs or speech_s is None:
                    report.add("AUDIO output trimmed to the frames", False, "no FLAC from the SaveAudio probe")
                else:
                    samples, rate = probe_audio(flacs[-1])
                    want = min(int(round(speech_s * rate)), int(round(frames / fps * rate)))
                    report.add("AUDIO output trimmed to the frames", samples == want,
                               f"{samples} samples at {rate} Hz = {samples / rate:.4f} s; speech {speech_s:.4f} s, "
                               f"frames cover {video_s:.4f} s -> want {want}")

            if interrupt:
                second = copy.deepcopy(prompt)
                second[lipsync_id]["inputs"]["seed"] = 1234  # not ComfyUI's cached result: it must run again
                run = await queue_and_follow(session, comfy.url, second, timeout=timeout, interrupt_on=lipsync_id)
                ours = [p for p in run.progress if str(p.get("node")) == lipsync_id]
                last = f"{ours[-1]['value']}/{ours[-1]['max']}" if ours else "none"
                finished_early = (bool(ours) and ours[-1]["value"] < ours[-1]["max"]
                                  and lipsync_id not in run.executed)
                report.add("interrupt honoured between chunks", run.outcome == "interrupted" and finished_early,
                           f"outcome {run.outcome}; last progress {last}"
                           + (f"; error {run.error.get('exception_message')}" if run.error else ""), run.seconds)
    finally:
        comfy.stop()
        if keep or not report.ok:
            print(f"kept for a look: {base} (ComfyUI log: {comfy.log_path})", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("comfyui_dir", nargs="?", default=os.environ.get("COMFYUI_DIR"),
                        help="the ComfyUI checkout (the folder with main.py); default $COMFYUI_DIR")
    parser.add_argument("--python", default=sys.executable, help="the Python that runs ComfyUI (default: this one)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for each workflow run")
    parser.add_argument("--audio-seconds", type=float, default=None,
                        help="cut the speech to this many seconds (fewer frames: a quicker run)")
    parser.add_argument("--steps", type=int, default=0,
                        help="inference_steps on the LatentSync node (0: the run plan decides)")
    parser.add_argument("--quick", action="store_true",
                        help=f"= --audio-seconds {QUICK_AUDIO_S:g} --steps {QUICK_STEPS} (4 chunks of frames: "
                             "enough to interrupt between them)")
    parser.add_argument("--no-interrupt", action="store_true", help="skip the interrupt check")
    parser.add_argument("--keep", action="store_true", help="keep the scratch base folder (outputs, log)")
    parser.add_argument("--json", type=Path, help="also write the checks to this JSON file")
    parser.add_argument("--write-api", type=Path,
                        help="write the API-format prompt converted from the UI workflow to this file")
    args = parser.parse_args(argv)
    if not args.comfyui_dir:
        parser.error("give the ComfyUI folder as an argument or in COMFYUI_DIR")
    comfyui_dir = Path(args.comfyui_dir).expanduser().resolve()
    if not (comfyui_dir / "main.py").is_file():
        print(f"{comfyui_dir}: no main.py here; give the ComfyUI checkout folder", file=sys.stderr)
        return 2
    if args.quick:
        args.audio_seconds = args.audio_seconds or QUICK_AUDIO_S
        args.steps = args.steps or QUICK_STEPS
    report = Report(comfyui_dir=str(comfyui_dir))
    code = 0
    try:
        asyncio.run(smoke(comfyui_dir, args.python, timeout=args.timeout, keep=args.keep, report=report,
                          interrupt=not args.no_interrupt, audio_seconds=args.audio_seconds, steps=args.steps,
                          write_api=args.write_api))
    except SmokeError as error:
        report.add("comfyui", False, str(error))
        code = 2 if not any(c.name.startswith("comfyui started") for c in report.checks) else 1
    print(report.table())
    if args.json:
        _write_json_atomic(args.json, {"comfyui_dir": report.comfyui_dir, "comfyui_version": report.comfyui_version,
                                       "ok": report.ok, "checks": [asdict(c) for c in report.checks]})
    return code or (0 if report.ok else 1)


if __name__ == "__main__":
    sys.exit(main())
