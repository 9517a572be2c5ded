"""The MedMNIST datasets fedsim reads (``data.kind: medmnist``): each flag's task, label names and
channels, as MedMNIST's own metadata (``medmnist/info.py``, ``INFO``) gives them. Plain data: a
config is checked against it without reading a file."""

from __future__ import annotations

from dataclasses import dataclass

#: where MedMNIST publishes its files (MedMNIST+, every size; the README's Zenodo record)
RECORD = "https://zenodo.org/records/10519652"
SIZES = (28, 64, 128, 224)
#: the keys of an official ``{flag}[_{size}].npz``
SPLIT_KEYS = ("train_images", "train_labels", "val_images", "val_labels", "test_images", "test_labels")


@dataclass(frozen=True)
class MedMNISTInfo:
    """One 2-D MedMNIST dataset: its task as MedMNIST states it, the class names, the channels."""

    task: str  # multi-class | binary-class | ordinal-regression (trained as classification over the grades)
    labels: tuple[str, ...]
    channels: int


_ORGANS = ("bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver", "lung-left",
           "lung-right", "pancreas", "spleen")

FLAGS: dict[str, MedMNISTInfo] = {
    "pathmnist": MedMNISTInfo("multi-class", (
        "adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle", "normal colon mucosa",
        "cancer-associated stroma", "colorectal adenocarcinoma epithelium"), 3),
    "dermamnist": MedMNISTInfo("multi-class", (
        "actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma", "benign keratosis-like lesions",
        "dermatofibroma", "melanoma", "melanocytic nevi", "vascular lesions"), 3),
    "octmnist": MedMNISTInfo("multi-class", (
        "choroidal neovascularization", "diabetic macular edema", "drusen", "normal"), 1),
    "pneumoniamnist": MedMNISTInfo("binary-class", ("normal", "pneumonia"), 1),
    "retinamnist": MedMNISTInfo("ordinal-regression", ("0", "1", "2", "3", "4"), 3),
    "breastmnist": MedMNISTInfo("binary-class", ("malignant", "normal, benign"), 1),
    "bloodmnist": MedMNISTInfo("multi-class", (
        "basophil", "eosinophil", "erythroblast",
        "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)", "lymphocyte", "monocyte",
        "neutrophil", "platelet"), 3),
    "tissuemnist": MedMNISTInfo("multi-class", (
        "Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule", "Glomerular endothelial cells",
        "Interstitial endothelial cells", "Leukocytes", "Podocytes", "Proximal Tubule Segments",
        "Thick Ascending Limb"), 1),
    "organamnist": MedMNISTInfo("multi-class", _ORGANS, 1),
    "organcmnist": MedMNISTInfo("multi-class", _ORGANS, 1),
    "organsmnist": MedMNISTInfo("multi-class", _ORGANS, 1),
}

#: flags fedsim refuses, and why (one line each)
REFUSED: dict[str, str] = {
    "chestmnist": "a multi-label task (14 findings per image, any number true), and fedsim trains one class per "
                  "image",
    **{flag: "3-D volumes (28×28×28), and fedsim's models are 2-D" for flag in (
        "organmnist3d", "nodulemnist3d", "adrenalmnist3d", "fracturemnist3d", "vesselmnist3d", "synapsemnist3d")},
}


def file_name(flag: str, size: int) -> str:
    """MedMNIST's file name: ``{flag}.npz`` at 28 px, ``{flag}_{size}.npz`` at 64, 128 and 224."""
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"
