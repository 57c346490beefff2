"""Datasets for tinyfm: registered sources, deterministic stratified splits, and in-memory tensor splits.

Example:
    from tinyfm.config import DataConfig
    from tinyfm.data import list_datasets, load_data

    list_datasets()  # ['aclimdb', 'fashion-mnist', 'rotten-tomatoes', 'text-file'] (+ 'digits' with scikit-learn)
    data = load_data(DataConfig(val_size=5000))
    data.train.x.shape, data.num_classes              # (torch.Size([55000, 1, 28, 28]), 10)
"""

from tinyfm.data import digits, fashion_mnist, reviews, textfiles  # noqa: F401  (importing a source registers it)
from tinyfm.data.dataset import ImageData, RawDataset, RawText, Split, TextData, TextSplit
from tinyfm.data.download import cache_dir, download, sha256_file
from tinyfm.data.fashion_mnist import download_fashion_mnist, load_fashion_mnist
from tinyfm.data.idx import read_idx, write_idx
from tinyfm.data.registry import list_datasets, load_data, register_dataset
from tinyfm.data.splits import grouped_indices, split_indices, stratified_indices, to_image_data, to_text_data

__all__ = [
    "ImageData",
    "RawDataset",
    "RawText",
    "Split",
    "TextData",
    "TextSplit",
    "cache_dir",
    "download",
    "download_fashion_mnist",
    "grouped_indices",
    "list_datasets",
    "load_data",
    "load_fashion_mnist",
    "read_idx",
    "register_dataset",
    "sha256_file",
    "split_indices",
    "stratified_indices",
    "to_image_data",
    "to_text_data",
    "write_idx",
]
