"""Optional fourth backbone: torchxrayvision's DenseNet-121 pretrained on chest X-rays.

``densenet121-res224-all`` was trained by Cohen et al. on eight public CXR data sets (NIH,
PadChest, CheXpert, MIMIC, Google, OpenI, RSNA, Kaggle) at 224 px: a CXR-pretrained
counterpart to the ImageNet backbones. It takes one channel scaled to [-1024, 1024]
(:meth:`Backbone.normalize` maps [0, 1] there with mean 0.5, std 1/2048). Its weights are
downloaded on first use from GitHub; offline, the error names the file to fetch.

Careful when reading results: NIH (and MIMIC, CheXpert) images were in its training data, so
"out-of-domain" numbers on them are not out of domain for this backbone.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from cxrlab.models.backbone import Backbone
from cxrlab.models.registry import register_backbone
from cxrlab.models.weights import WeightsUnavailableError, unavailable_message

XRV_WEIGHTS = "densenet121-res224-all"


class XRVFeatures(nn.Module):
    """The convolutional trunk of an xrv DenseNet with a ReLU + global average pool on top
    (what xrv's ``features2`` computes, without its resolution printouts)."""

    def __init__(self, densenet):
        super().__init__()
        self.features = densenet.features
        self.num_features = densenet.classifier.in_features
        self.in_chans = 1

    def forward(self, x):
        f = F.relu(self.features(x))  # not in place: Grad-CAM keeps norm5's output
        return F.adaptive_avg_pool2d(f, 1).flatten(1)


def _fetch(weights: str) -> None:
    """Make sure the xrv weight file is in xrv's cache folder, downloading it if needed."""
    import os

    import torchxrayvision as xrv

    url = xrv.models.model_urls[weights]["weights_url"]
    local = os.path.join(os.path.expanduser(xrv.utils.get_cache_dir()), os.path.basename(url))
    if os.path.isfile(local):
        return
    hint = f"{url} (save it as {local}, or anywhere and pass weights=that path)"
    try:
        os.makedirs(os.path.dirname(local), exist_ok=True)
        xrv.utils.download(url, local)
    except Exception as e:  # requests / urllib / disk errors all mean "not available"
        if os.path.exists(local):
            os.remove(local)  # never leave a half file that looks like a weight file
        raise WeightsUnavailableError(unavailable_message("xrv_densenet121", hint, e)) from e


@register_backbone("xrv_densenet121", description="DenseNet-121 (7M params, 1024-d) "
                   "pretrained on 8 CXR data sets, torchxrayvision", weights_source="CXR",
                   display_name="DenseNet-121 (XRV)", table_rank=3)
def xrv_densenet121(pretrained: bool = False, image_size: int | None = None, **kw) -> Backbone:
    try:
        import torchxrayvision as xrv
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise ImportError("xrv_densenet121 needs torchxrayvision: pip install torchxrayvision") from e
    if pretrained:
        _fetch(XRV_WEIGHTS)
        net = xrv.models.DenseNet(weights=XRV_WEIGHTS, **kw)
    else:
        net = xrv.models.DenseNet(weights=None, **kw)
    m = XRVFeatures(net)
    url = xrv.models.model_urls[XRV_WEIGHTS]["weights_url"]
    bb = Backbone(m, name="xrv_densenet121", num_features=m.num_features, in_chans=1,
                  mean=(0.5,), std=(1 / 2048,), input_size=image_size or 224,
                  fixed_input_size=True, hub_hint=url)
    # the published files are whole pickled models: loading them needs pickle (trusted source)
    bb.weights_need_pickle = True
    if pretrained:
        bb.weights_id = f"xrv:{XRV_WEIGHTS}"
    return bb
