"""Google's TensorFlow BERT checkpoints, read without TensorFlow or protobuf.

A checkpoint `bert_model.ckpt` is a tensor bundle: `bert_model.ckpt.index` says where each tensor lies,
and `bert_model.ckpt.data-00000-of-00001` (one file per shard) holds the bytes.

The index is a LevelDB-style sorted table:
  file   = data blocks, a meta-index block, an index block, then a 48-byte footer
  footer = meta-index handle, index handle (each two varints: offset, size), zero padding to 40 bytes,
           and the 8-byte magic number 0xdb4775248b80fb57
  block  = entries, then the restart offsets (uint32 each) and their count (uint32); every block on disk
           is followed by a 5-byte trailer: a compression byte (0 = none) and the masked crc32c of
           block + compression byte
  entry  = varint shared-prefix length, varint unshared length, varint value length, the unshared key
           bytes, the value: keys are prefix-compressed against the previous key in the block
The index block maps the last key of each data block to that block's handle. In the data blocks, the
entry under the empty key is a BundleHeaderProto (num_shards, endianness); every other key is a
variable name whose value is a BundleEntryProto (dtype, shape, shard_id, offset, size, crc32c), both
decoded here from the protobuf wire format. Tensor bytes are little-endian and in C order.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minibert.formats.errors import CheckpointError

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5

# TensorFlow DataType enum values -> numpy dtypes (little-endian); others are refused by name.
DTYPES = {
    1: np.dtype("<f4"),
    2: np.dtype("<f8"),
    3: np.dtype("<i4"),
    4: np.dtype("u1"),
    5: np.dtype("<i2"),
    6: np.dtype("i1"),
    9: np.dtype("<i8"),
    10: np.dtype("?"),
    19: np.dtype("<f2"),
}
DTYPE_NAMES = {7: "string", 8: "complex64", 14: "bfloat16", 18: "complex128", 20: "resource", 21: "variant"}


class TFCheckpointError(CheckpointError):
    """A TensorFlow checkpoint that cannot be read as it is; the message names the file and variable."""


@dataclass
class BundleEntry:
    name: str
    dtype: int  # TensorFlow DataType enum
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int  # masked, as TensorFlow stores it


class TFCheckpoint:
    """The variables of a tensor bundle, read lazily: `ckpt.names()`, `ckpt.entry(name)`, `ckpt.read(name)`.

    >>> ckpt = TFCheckpoint("chinese_L-12_H-768_A-12/bert_model.ckpt")
    >>> ckpt.read("bert/embeddings/word_embeddings").shape
    (21128, 768)
    """

    def __init__(self, prefix, verify: bool = True):
        self.prefix = Path(str(prefix).removesuffix(".index"))
        self.index_path = Path(f"{self.prefix}.index")
        self.verify = verify
        if not self.index_path.is_file():
            raise FileNotFoundError(f"TensorFlow checkpoint index not found: {self.index_path}")
        entries = {}
        for key, value in read_table(self.index_path):
            if key in entries:  # a sorted table never repeats a key; a later copy must not silently win
                raise TFCheckpointError(f"{self.index_path}: variable {_name(key, self.index_path)!r} is listed twice")
            entries[key] = value
        if b"" not in entries:
            raise TFCheckpointError(f"{self.index_path}: no bundle header (the entry under the empty key)")
        header = parse_message(entries.pop(b""), self.index_path, "bundle header")
        self.num_shards = header.get(1, [1])[0]
        if header.get(2, [0])[0] != 0:
            raise TFCheckpointError(
                f"{self.index_path}: the bundle header says big-endian; only little-endian checkpoints are supported"
            )
        self.entries = {
            _name(key, self.index_path): _entry(_name(key, self.index_path), value, self.index_path)
            for key, value in entries.items()
        }
        self._shards: dict[int, np.memmap] = {}

    def names(self) -> list[str]:
        return list(self.entries)

    def entry(self, name: str) -> BundleEntry:
        return self.entries[name]

    def shard_path(self, shard_id: int) -> Path:
        return Path(f"{self.prefix}.data-{shard_id:05d}-of-{self.num_shards:05d}")

    def read(self, name: str) -> np.ndarray:
        """The tensor `name` as a read-only numpy array over the memory-mapped data file."""
        e = self.entries[name]
        if e.dtype not in DTYPES:
            raise TFCheckpointError(
                f"{self.index_path}: variable {name!r} has dtype "
                f"{DTYPE_NAMES.get(e.dtype, e.dtype)}, which minibert does not read"
            )
        dtype = DTYPES[e.dtype]
        count = math.prod(e.shape)  # Python ints: a crafted shape cannot wrap around to a matching size
        if count * dtype.itemsize != e.size:
            raise TFCheckpointError(
                f"{self.index_path}: variable {name!r} has shape {e.shape} of {dtype}, "
                f"{count * dtype.itemsize} bytes, but its entry says {e.size}"
            )
        path = self.shard_path(e.shard_id)
        data = self._shard(e.shard_id, path)
        if e.offset + e.size > len(data):
            raise TFCheckpointError(
                f"{path}: truncated: variable {name!r} needs bytes {e.offset}..{e.offset + e.size}"
                f" but the file has {len(data)}"
            )
        raw = data[e.offset : e.offset + e.size]
        if self.verify and mask_crc(crc32c(raw)) != e.crc32c:
            raise TFCheckpointError(f"{path}: checksum mismatch for variable {name!r}: the data is corrupt")
        return raw.view(dtype).reshape(e.shape)

    def _shard(self, shard_id: int, path: Path) -> np.ndarray:
        if shard_id not in self._shards:
            if not path.is_file():
                raise FileNotFoundError(f"TensorFlow checkpoint data file not found: {path}")
            self._shards[shard_id] = (
                np.memmap(path, dtype=np.uint8, mode="r") if path.stat().st_size else np.zeros(0, np.uint8)
            )
        return self._shards[shard_id]


def _name(key: bytes, path: Path) -> str:
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        raise TFCheckpointError(f"{path}: variable name {key[:60]!r} is not UTF-8 text: the index is corrupt") from None


def _entry(name: str, value: bytes, path: Path) -> BundleEntry:
    fields = parse_message(value, path, f"entry of {name!r}")
    shape = ()
    if 2 in fields:
        shape_fields = parse_message(fields[2][0], path, f"shape of {name!r}")
        shape = tuple(parse_message(dim, path, f"shape of {name!r}").get(1, [0])[0] for dim in shape_fields.get(2, []))
    if 7 in fields:
        raise TFCheckpointError(f"{path}: variable {name!r} is stored in slices, which minibert does not read")
    return BundleEntry(
        name=name,
        dtype=fields.get(1, [0])[0],
        shape=shape,
        shard_id=fields.get(3, [0])[0],
        offset=fields.get(4, [0])[0],
        size=fields.get(5, [0])[0],
        crc32c=fields.get(6, [0])[0],
    )


# --- the sorted table ------------------------------------------------------------------------------


def read_table(path: Path):
    """Yield (key, value) for every entry of the table file at `path`, in key order."""
    data = Path(path).read_bytes()
    if len(data) < FOOTER_SIZE:
        raise TFCheckpointError(f"{path}: truncated: {len(data)} bytes is shorter than the table footer")
    footer = data[-FOOTER_SIZE:]
    if struct.unpack("<Q", footer[-8:])[0] != TABLE_MAGIC:
        raise TFCheckpointError(f"{path}: not a TensorFlow checkpoint index (bad magic number; truncated?)")
    pos = 0
    _, pos = _handle(footer, pos, path)  # meta-index: holds nothing a bundle needs
    index_handle, _ = _handle(footer, pos, path)
    for _, handle_bytes in _block_entries(_block(data, index_handle, path), path):
        handle, _ = _handle(handle_bytes, 0, path)
        yield from _block_entries(_block(data, handle, path), path)


def _handle(buf: bytes, pos: int, path: Path) -> tuple[tuple[int, int], int]:
    offset, pos = read_varint(buf, pos, path)
    size, pos = read_varint(buf, pos, path)
    return (offset, size), pos


def _block(data: bytes, handle: tuple[int, int], path: Path) -> bytes:
    offset, size = handle
    end = offset + size + BLOCK_TRAILER_SIZE
    if end > len(data) - FOOTER_SIZE:
        raise TFCheckpointError(f"{path}: truncated or corrupt: a block at {offset} runs past the end of the file")
    block, kind = data[offset : offset + size], data[offset + size]
    (stored,) = struct.unpack("<I", data[offset + size + 1 : end])
    if mask_crc(crc32c(data[offset : offset + size + 1])) != stored:
        raise TFCheckpointError(f"{path}: checksum mismatch in the block at byte {offset}: the index is corrupt")
    if kind != 0:
        raise TFCheckpointError(
            f"{path}: block at {offset} uses compression type {kind}; only uncompressed "
            "tables (what TensorFlow writes for checkpoints) are supported"
        )
    return block


def _block_entries(block: bytes, path: Path):
    if len(block) < 4:
        raise TFCheckpointError(f"{path}: corrupt block of {len(block)} bytes")
    (num_restarts,) = struct.unpack("<I", block[-4:])
    end = len(block) - 4 - 4 * num_restarts  # entries stop where the restart array starts
    if end < 0:
        raise TFCheckpointError(f"{path}: corrupt block: {num_restarts} restarts do not fit in {len(block)} bytes")
    pos, key = 0, b""
    while pos < end:
        shared, pos = read_varint(block, pos, path)
        unshared, pos = read_varint(block, pos, path)
        value_size, pos = read_varint(block, pos, path)
        if shared > len(key) or pos + unshared + value_size > end:
            raise TFCheckpointError(f"{path}: corrupt block entry at byte {pos}")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + value_size]
        pos += value_size


# --- protobuf wire format --------------------------------------------------------------------------


def read_varint(buf: bytes, pos: int, path="data") -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise TFCheckpointError(f"{path}: corrupt varint at byte {pos}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def parse_message(buf: bytes, path, what: str) -> dict[int, list]:
    """Field number -> list of values: ints for varint and fixed fields, bytes for length-delimited ones."""
    fields: dict[int, list] = {}
    pos = 0
    while pos < len(buf):
        tag, pos = read_varint(buf, pos, path)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = read_varint(buf, pos, path)
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 2:
            size, pos = read_varint(buf, pos, path)
            value, pos = bytes(buf[pos : pos + size]), pos + size
        elif wire == 5:
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise TFCheckpointError(f"{path}: corrupt {what}: wire type {wire}")
        if pos > len(buf):
            raise TFCheckpointError(f"{path}: corrupt {what}: field {number} runs past its end")
        fields.setdefault(number, []).append(value)
    return fields


# --- crc32c (Castagnoli), in numpy ---------------------------------------------------------------------

_POLY = 0x82F63B78  # reflected Castagnoli polynomial


def _make_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(_POLY), table >> 1).astype(np.uint32)
    return table


_TABLE = _make_table()
_TABLE_LIST = _TABLE.tolist()


def _crc_bytes(crc: int, data) -> int:
    """The plain byte-at-a-time update, for short inputs."""
    for byte in bytes(data):
        crc = _TABLE_LIST[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def _gf2_times(matrix: list[int], vector: int) -> int:
    out, i = 0, 0
    while vector:
        if vector & 1:
            out ^= matrix[i]
        vector >>= 1
        i += 1
    return out


def _zeros_operator(nbytes: int) -> list[int]:
    """The 32x32 GF(2) matrix that advances a crc register over `nbytes` zero bytes."""
    op = [_POLY] + [1 << i for i in range(31)]  # one zero bit
    result = None
    nbits = 8 * nbytes
    while nbits:
        if nbits & 1:
            result = op if result is None else [_gf2_times(op, col) for col in result]
        op = [_gf2_times(op, col) for col in op]
        nbits >>= 1
    return result


def crc32c(data, lanes: int = 4096) -> int:
    """crc32c of `data` (bytes or a uint8 array). Large inputs are cut into `lanes` equal pieces whose
    crcs numpy computes side by side, one byte column at a time; the pieces are then chained with the
    zero-bytes operator (crc(A + B) = shift(crc(A), len B) ^ crc(B), on raw registers)."""
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1)
    n = len(buf)
    piece = n // lanes
    if piece < 64:
        return _crc_bytes(0xFFFFFFFF, buf) ^ 0xFFFFFFFF
    register = np.full(lanes, 0, dtype=np.uint32)  # raw registers start at zero; the init goes in below
    columns = np.ascontiguousarray(buf[: lanes * piece].reshape(lanes, piece).T)  # (piece, lanes)
    for column in columns:
        register = _TABLE[(register ^ column) & 0xFF] ^ (register >> 8)
    shift = _zeros_operator(piece)
    crc = _gf2_times(_zeros_operator(lanes * piece), 0xFFFFFFFF)  # the 0xFFFFFFFF init, advanced to the end
    chained = 0
    for r in register.tolist():
        chained = _gf2_times(shift, chained) ^ r
    crc ^= chained
    return _crc_bytes(crc, buf[lanes * piece :]) ^ 0xFFFFFFFF


def mask_crc(crc: int) -> int:
    """TensorFlow and LevelDB store crc32c rotated and offset, so a crc of data holding crcs stays strong."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# --- Google's variable names -----------------------------------------------------------------------

# Variables that are no weights of the model: optimiser state and training counters.
SKIPPED = {
    r".*/adam_[mv]": "Adam's moment estimates (AdamWeightDecayOptimizer slots)",
    r"global_step": "the training step counter",
    r"(.*/)?(loss_scale|good_steps|current_loss_scale)": "mixed-precision loss-scaling state",
}
_SKIPPED = [re.compile(p + "$") for p in SKIPPED]


def google_to_hf(name: str) -> tuple[str, bool] | None:
    """Hugging Face key for a Google variable, and whether its value must be transposed; None to skip.

    bert/encoder/layer_3/attention/self/query/kernel -> bert.encoder.layer.3.attention.self.query.weight
    (transposed: TensorFlow dense kernels are [in, out], torch Linear weights [out, in]);
    .../LayerNorm/gamma, beta -> LayerNorm.weight, bias; embedding tables gain .weight;
    the pretraining heads' own names: cls/predictions/output_bias -> cls.predictions.bias and
    cls/seq_relationship/output_weights ([2, hidden], already [out, in]) -> cls.seq_relationship.weight.
    """
    if any(p.match(name) for p in _SKIPPED):
        return None
    special = {
        "cls/predictions/output_bias": "cls.predictions.bias",
        "cls/seq_relationship/output_weights": "cls.seq_relationship.weight",
        "cls/seq_relationship/output_bias": "cls.seq_relationship.bias",
    }
    if name in special:
        return special[name], False
    key = re.sub(r"/layer_(\d+)/", r"/layer/\1/", name).replace("/", ".")
    if re.fullmatch(r"bert\.embeddings\.(word|position|token_type)_embeddings", key):
        return key + ".weight", False
    for suffix, new, transpose in (
        (".kernel", ".weight", True),
        (".gamma", ".weight", False),
        (".beta", ".bias", False),
        (".bias", ".bias", False),
    ):
        if key.endswith(suffix) and key.startswith(("bert.", "cls.")):
            return key.removesuffix(suffix) + new, transpose
    raise TFCheckpointError(f"unexpected variable {name!r}")


def hf_state_dict(ckpt: TFCheckpoint) -> dict:
    """Every model weight of the checkpoint as a torch tensor under its Hugging Face key; the optimiser
    slots and counters are never read from disk."""
    import torch

    state, seen = {}, {}
    for name in ckpt.names():
        try:
            mapped = google_to_hf(name)
        except TFCheckpointError as e:
            raise TFCheckpointError(f"{ckpt.index_path}: {e}") from None
        if mapped is None:
            continue
        key, transpose = mapped
        if key in state:  # e.g. bert/encoder/layer/0/... beside bert/encoder/layer_0/...
            raise TFCheckpointError(f"{ckpt.index_path}: variables {seen[key]!r} and {name!r} both map to {key!r}")
        seen[key] = name
        value = ckpt.read(name)
        if value.dtype.kind != "f":
            raise TFCheckpointError(f"{ckpt.index_path}: variable {name!r} has dtype {value.dtype}; expected float")
        value = value.T if transpose else value
        state[key] = torch.from_numpy(np.array(value, dtype=value.dtype.newbyteorder("=")))  # a writable copy
    return state
