"""The default processor, processor loading and how outcomes are classified."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.config import ConfigError
from app.lifecycle import ClaimedMessage
from app.worker.outcomes import describe_error, run_processor
from app.worker.processors import PermanentProcessingError, analyse_text, load_processor


def message(content: str) -> ClaimedMessage:
    return ClaimedMessage(id=1, content=content, attempts=1, created_at=datetime.now(UTC))


def test_analyse_text_is_deterministic_real_work() -> None:
    fullwidth_hello = "\uff28\uff45\uff4c\uff4c\uff4f"
    text = f"{fullwidth_hello}  World\nsecond line\n"
    result = analyse_text(message(text))
    assert result == analyse_text(message(text))
    assert result["characters"] == 25
    assert result["bytes"] == 35
    assert result["words"] == 4
    assert result["lines"] == 2
    assert result["normalized"] == "hello world second line"
    assert len(result["sha256"]) == 64


def test_load_processor_by_path() -> None:
    assert load_processor("app.worker.processors:analyse_text") is analyse_text
    with pytest.raises(ConfigError, match=r"package\.module:callable"):
        load_processor("app.worker.processors")
    with pytest.raises(ConfigError, match="N3HUB_PROCESSOR='nonexistent:fn' cannot be imported"):
        load_processor("nonexistent:fn")
    with pytest.raises(ConfigError, match="not callable"):
        load_processor("app.worker.processors:PERMANENT_ERRORS")


def raises(error: Exception):
    def processor(_: ClaimedMessage) -> None:
        raise error

    return processor


@pytest.mark.parametrize(
    ("processor", "permanent"),
    [
        (raises(PermanentProcessingError("no")), True),
        (raises(ValueError("bad")), True),
        (raises(ConnectionError("later")), False),
        (raises(RuntimeError("later")), False),
        (raises(TypeError("a bug in the processor")), False),
        (lambda _: object(), True),  # not JSON
    ],
)
def test_run_processor_classifies_failures(processor, permanent: bool) -> None:
    outcome = run_processor(processor, message("x"), 1024)
    assert not outcome.succeeded
    assert outcome.permanent is permanent


def test_a_type_error_inside_the_processor_is_its_failure_not_a_result_that_is_not_json() -> None:
    outcome = run_processor(raises(TypeError("unsupported operand")), message("x"), 1024)
    assert outcome.error == "TypeError: unsupported operand"
    unserialisable = run_processor(lambda _: {"at": object()}, message("x"), 1024)
    assert unserialisable.error is not None
    assert unserialisable.error.startswith("the processor's result is not JSON: TypeError")


def test_error_description_is_one_bounded_line() -> None:
    text = describe_error(RuntimeError("a\nb " + "x" * 1000))
    assert "\n" not in text
    assert text.startswith("RuntimeError: a b")
    assert len(text) == 500
