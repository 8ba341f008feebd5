"""Image reconstruction from brain activity (MindEye2 / MindBridge style, on ``diffusers``).

One module per part:

- :mod:`.encoders` — image targets behind one interface: an encoder trained on the stimulus set
  (default, offline) or a pretrained CLIP vision model from a local folder;
- :mod:`.diffusion` and :mod:`.sampling` — a conditional ``UNet2DConditionModel`` trained on the
  stimulus set, DPM-Solver++ sampling with classifier-free guidance, img2img and gradient
  guidance;
- :mod:`.pretrained` — a pretrained unCLIP pipeline from a local folder;
- :mod:`.features` — the second feature space of the metrics (a fixed random CNN);
- :mod:`.braindive` — BrainDiVE-style synthesis of images that drive one region;
- :mod:`.reconstructor` — :class:`Reconstructor`, the estimator over all of them;
- :mod:`.config` — ``models/reconstruction.yaml``.
"""

from .config import ReconstructionConfig, load_reconstruction_config
from .reconstructor import Reconstructions, Reconstructor, select_by_embedding

__all__ = [
    "ReconstructionConfig",
    "Reconstructions",
    "Reconstructor",
    "load_reconstruction_config",
    "select_by_embedding",
]
