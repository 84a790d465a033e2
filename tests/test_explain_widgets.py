"""The CAM explorer runs headless: controls change the rendered overlay, the static figure
comes without a browser."""

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def explorer(tmp_path_factory):
    from cxrlab.data.synthetic import write_synthetic_cache
    from cxrlab.explain.widgets import CamExplorer
    from cxrlab.methods.registry import create_algorithm
    from cxrlab.models import create_backbone

    cache = write_synthetic_cache(tmp_path_factory.mktemp("w") / "c",
                                  hospitals=["source", "target_nih"], n_per_hospital=60,
                                  image_size=32, shortcut=True)
    models = {n: create_algorithm("bce_finetune", create_backbone(n, image_size=32, seed=1), 2)
              for n in ("tiny_cnn", "tiny_vit")}
    return CamExplorer(cache, models, ["Effusion", "Pneumothorax"], per_hospital=5)


def test_controls_change_the_overlay(explorer):
    import ipywidgets as W

    box = explorer.widget()
    assert isinstance(box, W.HBox)
    img = explorer._widgets["image"]
    c = explorer._widgets["controls"]
    assert img.value[:8] == b"\x89PNG\r\n\x1a\n" and "cxrlab-cam-overlay" in img._dom_classes
    seen = {bytes(img.value)}
    for key, value in (("label", "Pneumothorax"), ("model", "tiny_vit"), ("method", "hirescam"),
                       ("index", 3), ("hospital", "target_nih"), ("alpha", 0.9)):
        c[key].value = value  # what a click in the browser does
        assert explorer.state[key] == value
        assert bytes(img.value) not in seen, f"changing {key} left the overlay unchanged"
        seen.add(bytes(img.value))
    assert "tiny_vit" in explorer._widgets["caption"].value and "SYNTHETIC" in explorer._widgets["caption"].value


def test_overlay_strength_and_static_figure(explorer):
    import matplotlib.pyplot as plt

    explorer.set(alpha=0.0)
    img, cam, p = explorer.current()
    assert np.allclose(explorer.overlay()[..., 0], img / 255.0) and 0 <= p <= 1
    assert cam.shape == img.shape
    fig = explorer.static_figure()
    assert len(fig.axes) == 2 and "SYNTHETIC" in fig._suptitle.get_text()
    plt.close(fig)
    with pytest.raises(KeyError, match="unknown explorer setting"):
        explorer.set(colour="red")


def test_explorer_rejects_bad_setup(explorer):
    from cxrlab.explain.widgets import CamExplorer

    with pytest.raises(ValueError, match="at least one model"):
        CamExplorer(explorer.cache, {}, ["Effusion"])
    with pytest.raises(ValueError, match="unknown CAM method"):
        CamExplorer(explorer.cache, explorer.models, ["Effusion"], methods=("gradcam", "nope"))
