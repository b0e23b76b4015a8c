"""The pack in a real ComfyUI: `scripts/comfyui_smoke.py`.

Without ComfyUI (CI): the smoke script's UI-to-API conversion runs on the example workflow
against ComfyUI 0.8.0's recorded `/object_info` for the core nodes plus our nodes' live
INPUT_TYPES, so a node change that breaks the shipped workflow fails here.

With ComfyUI (set COMFYUI_DIR to the checkout, and COMFYUI_PYTHON to the Python that runs it
if that is not this one): the whole smoke check runs, ComfyUI's loader, `/prompt`, progress,
outputs and interrupt included. See docs/comfyui.md, "Loaded in a real ComfyUI".
"""
from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from latentsync.comfy.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "scripts" / "comfyui_smoke.py"
CORE_OBJECT_INFO = Path(__file__).parent / "data" / "comfyui_core_object_info.json"


@pytest.fixture(scope="module")
def smoke():
    spec = importlib.util.spec_from_file_location("comfyui_smoke", SMOKE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["comfyui_smoke"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("comfyui_smoke", None)


def _our_object_info() -> dict:
    """What ComfyUI's /object_info says of our nodes, from their declarations (the parts the
    conversion reads: inputs in order, outputs)."""
    info = {}
    for key, node_class in NODE_CLASS_MAPPINGS.items():
        inputs = node_class.INPUT_TYPES()
        info[key] = {
            "input": inputs,
            "input_order": {group: list(names) for group, names in inputs.items()},
            "output": list(node_class.RETURN_TYPES),
            "display_name": NODE_DISPLAY_NAME_MAPPINGS[key],
        }
    return info


@pytest.fixture(scope="module")
def object_info():
    core = json.loads(CORE_OBJECT_INFO.read_text(encoding="utf-8"))["nodes"]
    return {**core, **_our_object_info()}


@pytest.fixture
def workflow():
    return json.loads((REPO / "examples" / "comfyui_workflow.json").read_text(encoding="utf-8"))


def _strip(prompt: dict) -> dict:
    return {node_id: {"class_type": node["class_type"], "inputs": node["inputs"]} for node_id, node in prompt.items()}


def test_example_workflow_converts_to_the_shipped_api_prompt(smoke, object_info, workflow):
    prompt = smoke.workflow_to_prompt(workflow, object_info)
    shipped = json.loads((REPO / "examples" / "comfyui_workflow_api.json").read_text(encoding="utf-8"))
    assert _strip(prompt) == _strip(shipped)
    # the muted benchmark branch is left out, as ComfyUI's frontend leaves it out of the prompt
    assert {node["class_type"] for node in prompt.values()} >= {"LatentSyncRunner", "LatentSyncRunnerAutoOptimize"}
    assert "LatentSyncRunnerGPUBenchmark" not in {node["class_type"] for node in prompt.values()}
    lipsync = prompt["5"]["inputs"]
    assert lipsync["seed"] == -1 and lipsync["weights"] == "random-small"  # "fixed" (control) is not an input
    assert lipsync["fps"] == ["2", 2] and lipsync["run_plan"] == ["4", 0]
    assert prompt["4"]["inputs"]["fps"] == ["2", 2]  # a widget turned into a socket: the link wins


def test_conversion_names_the_node_and_field_of_a_bad_widget_value(smoke, object_info, workflow):
    broken = copy.deepcopy(workflow)
    lipsync = next(node for node in broken["nodes"] if node["id"] == 5)
    lipsync["widgets_values"][0] = "best"
    with pytest.raises(smoke.SmokeError, match=r"node 5 \(LatentSyncRunner\).*quality_preset='best'"):
        smoke.workflow_to_prompt(broken, object_info)


def test_conversion_catches_widget_values_out_of_step(smoke, object_info, workflow):
    # without the seed's control_after_generate value every later widget shifts by one
    shifted = copy.deepcopy(workflow)
    lipsync = next(node for node in shifted["nodes"] if node["id"] == 5)
    lipsync["widgets_values"].remove("fixed")
    with pytest.raises(smoke.SmokeError, match=r"node 5 \(LatentSyncRunner\).*weights=''"):
        smoke.workflow_to_prompt(shifted, object_info)


def test_conversion_rejects_a_link_of_the_wrong_type(smoke, object_info, workflow):
    wrong = copy.deepcopy(workflow)
    for link in wrong["links"]:
        if link[0] == 5:  # Auto-Optimize run_plan -> LatentSync run_plan; point it at the info STRING
            link[2], link[5] = 1, "STRING"
    with pytest.raises(smoke.SmokeError, match=r"node 5 \(LatentSyncRunner\): input 'run_plan'"):
        smoke.workflow_to_prompt(wrong, object_info)


def test_conversion_rejects_a_node_type_this_comfyui_lacks(smoke, object_info, workflow):
    renamed = copy.deepcopy(workflow)
    next(node for node in renamed["nodes"] if node["id"] == 5)["type"] = "LatentSync"
    with pytest.raises(smoke.SmokeError, match=r"node 5 \(LatentSync\): type is not a node"):
        smoke.workflow_to_prompt(renamed, object_info)


def test_import_report_is_read_from_comfyuis_log(smoke):
    log = ("Import times for custom nodes:\n"
           "   0.0 seconds: /x/ComfyUI/custom_nodes/websocket_image_save.py\n"
           "   1.4 seconds (IMPORT FAILED): /tmp/base/custom_nodes/latentsync-runner\n")
    assert smoke.parse_import_report(log) == (1.4, True)
    assert smoke.parse_import_report(log.replace(" (IMPORT FAILED)", "")) == (1.4, False)
    assert smoke.parse_import_report("Import times for custom nodes:\n") is None


def test_trimmed_speech_keeps_the_wav_format(smoke, tmp_path):
    import wave

    source = REPO / "examples" / "assets" / "quickstart_speech.wav"
    seconds = smoke.write_trimmed_wav(source, tmp_path / "cut.wav", 2.03)
    with wave.open(str(source)) as original, wave.open(str(tmp_path / "cut.wav")) as cut:
        assert cut.getframerate() == original.getframerate() and cut.getnchannels() == original.getnchannels()
        assert cut.getnframes() == round(2.03 * original.getframerate())
        assert cut.readframes(100) == original.readframes(100)
    assert seconds == pytest.approx(2.03)


def _comfyui() -> tuple[Path, str]:
    """(ComfyUI folder, its Python), or skip: CI has no ComfyUI."""
    folder = os.environ.get("COMFYUI_DIR")
    if not folder:
        pytest.skip("COMFYUI_DIR is not set (no ComfyUI checkout to load the pack in)")
    comfyui_dir = Path(folder).expanduser()
    if not (comfyui_dir / "main.py").is_file():
        pytest.skip(f"COMFYUI_DIR={folder}: no main.py there")
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    probe = subprocess.run(
        [python, "-c", "import folder_paths, comfy.options, aiohttp, av, torchvision, torchaudio"],
        cwd=comfyui_dir, capture_output=True, text=True, timeout=120,
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(f"ComfyUI does not import with {python} ({last}); set COMFYUI_PYTHON to ComfyUI's Python")
    return comfyui_dir, python


@pytest.mark.slow
def test_example_workflow_runs_in_a_real_comfyui(tmp_path):
    comfyui_dir, python = _comfyui()
    report_path = tmp_path / "smoke.json"
    done = subprocess.run(
        [python, str(SMOKE), str(comfyui_dir), "--quick", "--json", str(report_path)],
        capture_output=True, text=True, timeout=900,
    )
    assert report_path.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(report_path.read_text(encoding="utf-8"))
    failed = [f"{c['name']}: {c['detail']}" for c in report["checks"] if not c["ok"]]
    assert done.returncode == 0 and report["ok"], "\n".join(failed) + "\n" + done.stderr[-3000:]
    names = {check["name"] for check in report["checks"]}
    for needed in ("pack imported by ComfyUI's loader", "nodes registered (/object_info)", "workflow runs (/prompt)",
                   "progress bar updates (LatentSync node)", "IMAGE output frame count",
                   "AUDIO output trimmed to the frames", "interrupt honoured between chunks"):
        assert needed in names
