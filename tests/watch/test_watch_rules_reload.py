"""Rules hot reload: debounce a burst of saves into one reload, keep the last good rules."""
from __future__ import annotations

from latentsync.testing.fake_pipeline import fake_load_ruleset
from latentsync.watch.rules_reload import RulesReloader
from watch_helpers import write_rules


def counting_loader(calls):
    def load(path):
        calls.append(path)
        return fake_load_ruleset(path)
    return load


def test_a_burst_of_events_reloads_once_after_the_quiet_period(tmp_path):
    write_rules(tmp_path, "v1")
    calls = []
    reloader = RulesReloader(tmp_path, counting_loader(calls), debounce=0.5, check_interval=1e9)
    reloader.load_initial()
    write_rules(tmp_path, "v2")
    for moment in (10.0, 10.2, 10.4):  # an editor's temp write, rename, and a touch
        reloader.notify(moment)
    assert reloader.maybe_reload(10.6) is False, "still inside the debounce window"
    assert reloader.maybe_reload(10.95) is True
    assert reloader.version == "v2" and len(calls) == 2
    assert reloader.maybe_reload(11.5) is False and len(calls) == 2, "nothing new: no reload"


def test_invalid_edit_keeps_last_good_and_a_fix_is_picked_up(tmp_path):
    write_rules(tmp_path, "v1")
    reloader = RulesReloader(tmp_path, fake_load_ruleset, debounce=0.0, check_interval=1e9)
    good = reloader.load_initial()
    (tmp_path / "base.yaml").write_text("version: v2\n")  # schema_version missing
    reloader.notify(1.0)
    assert reloader.maybe_reload(1.0) is False
    assert reloader.current is good and reloader.rejected == 1
    assert "schema_version" in str(reloader.last_error)
    write_rules(tmp_path, "v3")
    reloader.notify(2.0)
    assert reloader.maybe_reload(2.0) is True and reloader.version == "v3" and reloader.last_error is None


def test_a_change_without_an_event_is_found_by_the_fingerprint(tmp_path):
    write_rules(tmp_path, "v1")
    reloader = RulesReloader(tmp_path, fake_load_ruleset, debounce=0.5, check_interval=1.0)
    reloader.load_initial()
    before = reloader.hash
    (tmp_path / "extra.yaml").write_text("schema_version: 1\nversion: v9\n")  # no notify(): a missed event
    assert reloader.maybe_reload(5.0) is False  # fingerprint changed: marked dirty, debounce starts now
    assert reloader.maybe_reload(5.6) is True and reloader.hash != before
