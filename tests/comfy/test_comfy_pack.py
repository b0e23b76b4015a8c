"""The node pack without running the pipeline: import rules, node declarations, weights folders,
run-plan plumbing, the benchmark node and the example workflow."""
from __future__ import annotations

import inspect
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from latentsync.comfy import convert, host
from latentsync.comfy.nodes import (
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, RUN_PLAN, LatentSync, LatentSyncAutoOptimize,
    LatentSyncGPUBenchmark, plan_from_payload,
)
from latentsync.errors import CheckpointError, InvalidInputError

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "numpy", "av", "cv2", "mediapipe", "diffusers", "durable", "jsonschema")

LOAD_AS_COMFYUI = """
import importlib.util, json, sys, tempfile, time, types
decoy = types.ModuleType("latentsync"); decoy.DECOY = True
sys.modules["latentsync"] = decoy  # another pack's module of the same name
if {with_folder_paths}:
    fp = types.ModuleType("folder_paths"); fp.models_dir = "/nonexistent/models"; fp.folder_names_and_paths = {{}}
    fp.add_model_folder_path = lambda name, path, is_default=False: fp.folder_names_and_paths.setdefault(
        name, ([], set()))[0].append(path)
    sys.modules["folder_paths"] = fp
tempdir_before = tempfile.gettempdir()
started = time.perf_counter()
name = {name!r}
spec = importlib.util.spec_from_file_location(name, {init!r}, submodule_search_locations=[{root!r}])
pack = importlib.util.module_from_spec(spec); sys.modules[name] = pack; spec.loader.exec_module(pack)
seconds = time.perf_counter() - started
facts = dict(seconds=seconds, nodes=sorted(pack.NODE_CLASS_MAPPINGS),
             heavy=sorted(m for m in {heavy!r} if m in sys.modules),
             node_module=pack.NODE_CLASS_MAPPINGS["LatentSyncRunner"].__module__,
             decoy_intact=sys.modules["latentsync"] is decoy and not hasattr(decoy, "__path__"),
             tempdir_same=tempfile.gettempdir() == tempdir_before,
             registry=getattr(sys.modules.get("folder_paths"), "folder_names_and_paths", None))
if {plan}:
    payload, info = pack.NODE_CLASS_MAPPINGS["LatentSyncRunnerAutoOptimize"]().optimize(goal="preview", clip_seconds=3.0)
    facts["planned_steps"] = payload["plan"]["settings"]["steps"]
    facts["foreign"] = sorted(m for m in sys.modules if m == "latentsync" or m.startswith("latentsync."))
print(json.dumps(facts, default=sorted))
"""


def load_like_comfyui(name, *, with_folder_paths=False, plan=False):
    code = LOAD_AS_COMFYUI.format(name=name, init=str(REPO / "__init__.py"), root=str(REPO), heavy=HEAVY,
                                  with_folder_paths=with_folder_paths, plan=plan)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_pack_imports_fast_without_heavy_modules_or_side_effects():
    facts = load_like_comfyui("latentsync-runner")
    assert facts["seconds"] < 1.0
    assert facts["heavy"] == []
    assert facts["nodes"] == sorted(NODE_CLASS_MAPPINGS)
    assert facts["node_module"] == "latentsync-runner.latentsync.comfy.nodes"
    assert facts["decoy_intact"] and facts["tempdir_same"]
    assert facts["registry"] is None  # no ComfyUI: no folder_paths module made up


def test_root_init_imported_as_a_plain_module_registers_nothing_and_does_not_fail():
    # what pytest does with the clone's root __init__.py when the folder is `latentsync-runner`
    import importlib.util

    root_init = Path(__file__).resolve().parents[2] / "__init__.py"
    spec = importlib.util.spec_from_file_location("__init__", root_init)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.NODE_CLASS_MAPPINGS == {} and module.NODE_DISPLAY_NAME_MAPPINGS == {}


def test_pack_registers_models_folder_inside_comfyui():
    facts = load_like_comfyui("/opt/ComfyUI/custom_nodes/latentsync-runner", with_folder_paths=True)  # newer ComfyUI: the path
    assert facts["registry"]["latentsync"][0] == ["/nonexistent/models/latentsync"]


def test_pack_under_another_name_plans_with_its_own_modules():
    """The lazy imports inside node functions are relative too: the decoy `latentsync` is never touched."""
    facts = load_like_comfyui("latentsync-runner", plan=True)
    assert facts["planned_steps"] >= 1
    assert facts["foreign"] == ["latentsync"]


def widget_names(node_class):
    spec = node_class.INPUT_TYPES()
    return [name for section in ("required", "optional") for name in spec.get(section, {})]


@pytest.mark.parametrize("node_class", [LatentSync, LatentSyncAutoOptimize, LatentSyncGPUBenchmark])
def test_node_declarations_match_their_functions(node_class):
    assert node_class in NODE_CLASS_MAPPINGS.values()
    key = next(k for k, v in NODE_CLASS_MAPPINGS.items() if v is node_class)
    assert NODE_DISPLAY_NAME_MAPPINGS[key].startswith("LatentSync")
    function = getattr(node_class(), node_class.FUNCTION)
    parameters = list(inspect.signature(function).parameters)
    assert sorted(parameters) == sorted(widget_names(node_class))
    required = node_class.INPUT_TYPES()["required"]
    for name, (kind, *options) in required.items():
        if isinstance(kind, list):
            default = options[0]["default"]
            assert default in kind, (name, default)
    assert len(node_class.RETURN_NAMES) == len(node_class.RETURN_TYPES) == len(node_class.OUTPUT_TOOLTIPS)


def test_weights_folders_under_models_latentsync(comfy):
    official = comfy.models_dir / "latentsync" / "LatentSync-1.6"
    official.mkdir(parents=True)
    (official / "latentsync_unet.pt").write_bytes(b"")
    (comfy.models_dir / "latentsync" / "empty").mkdir()
    choices = LatentSync.INPUT_TYPES()["required"]["weights"][0]
    assert choices == ["random-small", "random", "LatentSync-1.6"]
    assert host.resolve_weights("LatentSync-1.6") == str(official)
    assert host.resolve_weights("random-small", str(official)) == str(official)  # a typed path wins
    with pytest.raises(CheckpointError, match="not a weights folder under"):
        host.resolve_weights("empty")


@pytest.fixture(scope="module")
def preview_payload():
    payload, info = LatentSyncAutoOptimize().optimize(goal="preview", clip_seconds=3.0, fps=30.0)
    return payload, info


def test_auto_optimize_length_comes_from_audio_then_images_then_clip_seconds(comfy, preview_payload):
    payload, info = preview_payload
    assert payload["plan"]["facts"]["clip_duration_s"] == 3.0 and "clip_seconds" in info
    assert payload["plan"]["facts"]["clip_fps"] == 30.0
    images = torch.zeros(50, 8, 8, 3)
    audio = {"waveform": torch.zeros(1, 2, 44100 * 7), "sample_rate": 44100}
    by_images, info = LatentSyncAutoOptimize().optimize(clip_seconds=99.0, fps=25.0, images=images)
    assert by_images["plan"]["facts"]["clip_duration_s"] == 2.0 and "50 connected frames" in info
    by_audio, info = LatentSyncAutoOptimize().optimize(clip_seconds=99.0, fps=25.0, images=images, audio=audio)
    assert by_audio["plan"]["facts"]["clip_duration_s"] == 7.0 and "connected audio" in info
    # the LatentSync node outputs upstream's length for the audio, not the 50 connected frames:
    # 7 s at 16 kHz = 112000 // 320 = 350 Whisper steps -> 350 // 2 + 2 = 177 frames (the audio covers 175)
    assert "177 output frames at 25 fps" in info


def test_node_settings_win_over_a_connected_plan(preview_payload):
    payload, _ = preview_payload
    plan = plan_from_payload(payload, "random-small", {"steps": 3, "deepcache": False})
    assert plan.settings["steps"] == 3 and plan.settings["deepcache"] is False
    planned = payload["plan"]["settings"]["steps"]
    assert planned != 3
    assert plan.sources["steps"].override and f"run plan said {planned}" in plan.sources["steps"].description
    assert all("steps" not in step["set"] for step in plan.fallbacks)
    untouched = plan_from_payload(payload, "random-small", {})
    assert untouched.settings.to_dict() == payload["plan"]["settings"]
    with pytest.raises(InvalidInputError, match="planned for random-small"):
        plan_from_payload(payload, "random", {})
    with pytest.raises(InvalidInputError, match="guidance_scale"):
        plan_from_payload(payload, "random-small", {"guidance_scale": 0.5})


def test_benchmark_node_reports_saves_and_plans(comfy, monkeypatch, tmp_path):
    calls = []

    def run_benchmark(mode, *, clear, progress=None):
        calls.append((mode, clear))
        progress("benchmark", 1, 1)
        return types.SimpleNamespace(text=f"GPU benchmark ({mode}): 1.0 s per video second", cache_path=tmp_path / "b.json")

    fake = types.ModuleType("latentsync.bench")
    fake.run_benchmark = run_benchmark
    monkeypatch.setitem(sys.modules, "latentsync.bench", fake)
    result = LatentSyncGPUBenchmark().benchmark(mode="full", clear_cache=True, save_report=True, clip_seconds=4.0)
    assert calls == [("full", True)]
    report, payload = result
    assert report.startswith("GPU benchmark (full)") and "report saved to" in report
    saved = list((comfy.output_dir / "latentsync").glob("benchmark-full-*.txt"))
    assert len(saved) == 1 and "1.0 s per video second" in saved[0].read_text()
    assert payload["plan"]["facts"]["clip_duration_s"] == 4.0
    assert isinstance(report, str) and LatentSyncGPUBenchmark.RETURN_TYPES == ("STRING", RUN_PLAN)
    assert comfy.bars and comfy.bars[-1].updates == [(1, 1)]


def test_benchmark_node_without_the_benchmark_module_says_so(comfy, monkeypatch):
    monkeypatch.setitem(sys.modules, "latentsync.bench", None)  # import fails
    report, payload = LatentSyncGPUBenchmark().benchmark(mode="quick", save_report=True)
    assert "not available" in report and "latentsync-bench" in report
    assert not (comfy.output_dir / "latentsync").exists()  # nothing to save
    assert "settings" in payload["plan"]


def test_auto_optimize_runs_the_benchmark_when_asked(comfy, monkeypatch):
    calls = []
    fake = types.ModuleType("latentsync.bench")
    fake.run_benchmark = lambda mode, *, clear, progress=None: calls.append(mode) or types.SimpleNamespace(
        text="measured", cache_path=None)
    monkeypatch.setitem(sys.modules, "latentsync.bench", fake)
    _, info = LatentSyncAutoOptimize().optimize(clip_seconds=2.0, run_benchmark=True, use_cached=False)
    assert calls == ["quick"] and "benchmark (quick): measured" in info
    _, info = LatentSyncAutoOptimize().optimize(clip_seconds=2.0, run_benchmark=False)
    assert calls == ["quick"]


def test_audio_keeps_its_rate_and_channels_and_is_trimmed():
    stereo = np.stack([np.linspace(-1, 1, 44100 * 2), np.zeros(44100 * 2)]).astype(np.float32)
    wave, rate = convert.audio_to_wave({"waveform": torch.from_numpy(stereo)[None], "sample_rate": 44100})
    assert rate == 44100 and wave.shape == (2, 88200)
    out = convert.trimmed_audio(wave, rate, 1.5)
    assert out["waveform"].shape == (1, 2, 66150) and out["sample_rate"] == 44100
    with pytest.raises(InvalidInputError, match="audio"):
        convert.audio_to_wave({"waveform": torch.zeros(1, 1, 0), "sample_rate": 16000})


def test_image_round_trip_is_exact_for_8_bit_frames():
    frames = np.random.default_rng(0).integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)
    image = convert.frames_to_image(frames)
    assert image.dtype == torch.float32 and float(image.max()) <= 1.0
    assert np.array_equal(convert.image_to_frames(image), frames)


def test_example_workflow_wires_the_three_nodes():
    workflow = json.loads((REPO / "examples" / "comfyui_workflow.json").read_text())
    nodes = {node["id"]: node for node in workflow["nodes"]}
    assert {"LatentSyncRunner", "LatentSyncRunnerAutoOptimize", "LatentSyncRunnerGPUBenchmark"} <= {
        node["type"] for node in nodes.values()}
    assert {"LoadVideo", "LoadAudio"} <= {node["type"] for node in nodes.values()}
    assert workflow["last_node_id"] == max(nodes) and workflow["last_link_id"] == max(l[0] for l in workflow["links"])
    for link_id, source, source_slot, target, target_slot, kind in workflow["links"]:
        output = nodes[source]["outputs"][source_slot]
        entry = nodes[target]["inputs"][target_slot]
        assert link_id in output["links"] and entry["link"] == link_id
        assert output["type"] == kind and entry["type"] in (kind, "*")
        if nodes[source]["type"] in NODE_CLASS_MAPPINGS:  # our outputs: the declared types
            assert NODE_CLASS_MAPPINGS[nodes[source]["type"]].RETURN_TYPES[source_slot] == kind
        if nodes[target]["type"] in NODE_CLASS_MAPPINGS:  # our inputs: declared with that type
            spec = NODE_CLASS_MAPPINGS[nodes[target]["type"]].INPUT_TYPES()
            declared = {**spec["required"], **spec.get("optional", {})}
            assert declared[entry["name"]][0] == kind
    for node in nodes.values():  # widget values in INPUT_TYPES order, each a valid choice
        if node["type"] not in NODE_CLASS_MAPPINGS:
            continue
        spec = NODE_CLASS_MAPPINGS[node["type"]].INPUT_TYPES()
        widgets = [(name, kind) for name, (kind, *opts) in {**spec["required"], **spec.get("optional", {})}.items()
                   if (isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN"))
                   and not (opts and opts[0].get("forceInput"))]
        values = [v for v in node["widgets_values"] if v not in ("fixed", "randomize")]
        assert len(values) == len(widgets), node["type"]
        for (name, kind), value in zip(widgets, values):
            if isinstance(kind, list):
                assert value in kind, (node["type"], name, value)
