"""cxrlab.claims: a sentence with its numbers, printed when they support it, an error when not."""
import numpy as np
import pytest

from cxrlab.claims import CHECKED, ClaimError, claim, claims_table, interval
from cxrlab.errors import CxrlabError


def test_a_claim_that_holds_prints_the_sentence_and_numbers(capsys):
    c = claim("every target loses AUC", np.array([0.1, 0.2]).min() > 0, target_nih=0.1, n=1200)
    out = capsys.readouterr().out
    assert c.held and "[claim holds] every target loses AUC" in out
    assert "target_nih 0.100" in out and "n 1,200" in out
    assert CHECKED[-1] is c


def test_a_claim_that_fails_names_the_sentence_and_numbers():
    with pytest.raises(ClaimError, match="tuned beats 0.5.*gain -0.020") as err:
        claim("tuned beats 0.5", False, gain=-0.02)
    assert isinstance(err.value, AssertionError) and isinstance(err.value, CxrlabError)
    assert not CHECKED[-1].held


def test_an_array_of_truths_must_say_all_or_any():
    with pytest.raises(TypeError, match="all"):
        claim("ambiguous", np.array([True, False]))
    claim("numpy bool is fine", np.bool_(True), quiet=True)


def test_intervals_format_and_compare():
    iv = interval(0.12, 0.05, 0.2)
    assert f"{iv}" == "0.120 [0.050, 0.200]" and f"{iv:.1f}" == "0.1 [0.1, 0.2]"
    assert iv.above(0) and not iv.above(0.1) and iv.below(0.3) and iv.excludes(0.0)
    assert not iv.excludes(0.1)
    with pytest.raises(ValueError):
        interval(0, 1, -1)


def test_claims_table_lists_what_was_checked():
    a = claim("one", True, quiet=True, x=1.0)
    t = claims_table([a])
    assert list(t.columns) == ["claim", "held", "numbers"] and t.iloc[0]["numbers"] == "x 1.000"


def test_numpy_scalars_print_like_python_numbers(capsys):
    import numpy as np

    from cxrlab.claims import claim

    claim("numpy numbers", True, a=np.float32(1.913744), b=np.int64(12000), c=np.bool_(True))
    out = capsys.readouterr().out
    assert "a 1.914" in out and "b 12,000" in out and "c True" in out
