from volseg.inference.norm_checks import batch_norm_warning, tile_warning
from volseg.models import UNet3D


def _net(norm):
    return UNet3D(1, 3, features=2, num_levels=2, norm=norm)


def test_batch_norm_under_eight_patches_warns_naming_the_override():
    warning = batch_norm_warning(_net("batch"), 2)
    assert "data.batch_size=2" in warning and warning.endswith("set model.norm=instance")
    assert "\n" not in warning
    assert batch_norm_warning(_net("batch"), 8) is None
    assert batch_norm_warning(_net("instance"), 2) is None
    assert batch_norm_warning(_net("batch"), None) is None  # no data module: nothing to judge


def test_per_input_norms_tiled_unlike_the_patch_warn_naming_the_key():
    key = "module.inference.tile_size"
    warning = tile_warning(_net("instance"), (80, 80, 48), [48, 48, 32], key)
    assert warning.startswith(f"{key}=[80, 80, 48] differs from the training patch [48, 48, 32]")
    assert warning.endswith(f"set {key}=[48, 48, 32]") and "\n" not in warning
    assert tile_warning(_net("group"), (80, 80, 48), (48, 48, 32), key) is not None
    # BatchNorm's statistics do not depend on the tile; an equal tile is fine for any norm.
    assert tile_warning(_net("batch"), (80, 80, 48), (48, 48, 32), key) is None
    assert tile_warning(_net("instance"), [48, 48, 32], (48, 48, 32), key) is None
    assert tile_warning(_net("instance"), None, (48, 48, 32), key) is None
