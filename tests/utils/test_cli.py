"""The entry points' error reporting (:mod:`hybrid_ir.utils.cli`): an expected error is its message alone, anything
else keeps its traceback."""

from __future__ import annotations

import pytest
from hydra.errors import InstantiationException

from hybrid_ir.utils.cli import expected_error, report_expected_errors
from hybrid_ir.utils.errors import ConfigError, DataError, DownloadError


def _raise(exc: Exception) -> None:
    raise exc


def _wrapped_by_hydra(err: Exception) -> InstantiationException:
    try:
        try:
            raise err
        except Exception as cause:
            raise InstantiationException("Error in call to target 'x'") from cause
    except InstantiationException as wrapper:
        return wrapper


def test_the_expected_error_is_found_itself_or_as_an_explicit_cause() -> None:
    config = ConfigError("data.batch_size=0: ...")
    data = DataError("/data/x.jsonl", "line 3", "missing key 'id'")
    download = DownloadError(
        "download failed: https://host/xquad-r/de.json: timed out; check the network, ..."
    )
    assert expected_error(config) is config and expected_error(data) is data
    assert expected_error(download) is download  # no network and no local copy: the user's to fix
    assert expected_error(_wrapped_by_hydra(config)) is config
    assert expected_error(RuntimeError("bug")) is None
    try:  # a bug while handling an expected error is a bug (implicit context, not a cause)
        try:
            raise config
        except ConfigError:
            raise RuntimeError("bug in the handler")  # noqa: B904
    except RuntimeError as bug:
        assert expected_error(bug) is None


@pytest.mark.parametrize("wrap", [False, True])
def test_outside_hydra_an_expected_error_prints_its_message_and_exits_1(
    wrap: bool, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    err = ConfigError("seed=-1: a seed must be ...")
    main = report_expected_errors(lambda: _raise(_wrapped_by_hydra(err) if wrap else err))
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 1
    assert capsys.readouterr().err == "Error: seed=-1: a seed must be ...\n"


def test_unexpected_errors_and_full_error_mode_propagate_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    bug = RuntimeError("a bug")
    with pytest.raises(RuntimeError) as info:
        report_expected_errors(lambda: _raise(bug))()
    assert info.value is bug
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    err = ConfigError("seed=-1")
    with pytest.raises(ConfigError) as info2:
        report_expected_errors(lambda: _raise(err))()
    assert info2.value is err
