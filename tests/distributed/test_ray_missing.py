"""Without Ray installed, the Ray commands exit 2 and say how to install it."""
import sys
from pathlib import Path

import pytest

from latentsync.cli.run import main
from latentsync.distributed import INSTALL_HINT, RayNotInstalledError, require_ray
from latentsync.testing.fake_pipeline import make_fake_audio, make_fake_video


@pytest.fixture
def no_ray(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError


def test_require_ray_raises_the_install_hint(no_ray):
    with pytest.raises(RayNotInstalledError) as info:
        require_ray()
    assert info.value.exit_code == 2
    assert "pip install 'latentsync-runner[ray]'" in str(info.value)


def test_batch_without_ray_exits_2_with_the_hint(no_ray, tmp_path: Path, capsys):
    make_fake_video(tmp_path / "a.mp4")
    (tmp_path / "plan.yaml").write_text("video: a.mp4\noutput: out/a.mp4\n")
    assert main(["batch", str(tmp_path / "plan.yaml"), "--ray"]) == 2
    err = capsys.readouterr().err
    assert "Ray is not installed" in err and INSTALL_HINT in err
    assert not (tmp_path / "out").exists()


def test_watch_with_ray_without_ray_exits_2_with_the_hint(no_ray, tmp_path: Path, capsys):
    (tmp_path / "in").mkdir()
    make_fake_video(tmp_path / "in" / "a.mp4")
    make_fake_audio(tmp_path / "in" / "a.wav")
    code = main(["watch", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--once", "--ray", "auto"])
    assert code == 2
    assert INSTALL_HINT in capsys.readouterr().err
    assert (tmp_path / "in" / "a.mp4").exists()  # nothing was claimed
