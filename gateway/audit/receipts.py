"""Receipts: what a user keeps to prove, later, that the platform logged their act.

A receipt carries the user's own event (so its hash can be recomputed), and once the
event is sealed the covering signed checkpoint and a Merkle inclusion proof of the event
hash in that checkpoint's segment. Checking it needs only the platform public key: no
other user's event is revealed, only sibling hashes.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field

from gateway.audit import merkle
from gateway.audit.checkpoints import Checkpoint, signature_valid
from gateway.audit.events import AuditEvent, event_message, hash_message
from gateway.errors import ReceiptInvalid

RECEIPT_FORMAT = "dsb-audit-receipt/1"


class InclusionProof(BaseModel):
    model_config = ConfigDict(frozen=True)

    leaf_index: int = Field(ge=0)
    tree_size: int = Field(ge=1)
    path: tuple[str, ...]


class Receipt(BaseModel):
    model_config = ConfigDict(frozen=True)

    format: str = RECEIPT_FORMAT
    seq: int = Field(ge=1)
    event_hash: str
    event: AuditEvent
    checkpoint: Checkpoint | None = None
    proof: InclusionProof | None = None

    @property
    def sealed(self) -> bool:
        return self.checkpoint is not None and self.proof is not None


class ReceiptCheck(BaseModel):
    """A receipt that verified: this event sits at ``seq`` under this signed checkpoint."""

    seq: int
    event_hash: str
    checkpoint_index: int
    checkpoint_seq_to: int


def verify_receipt(receipt: Receipt, public_key: Ed25519PublicKey) -> ReceiptCheck:
    """Check a receipt offline; ``ReceiptInvalid`` names the first thing that does not hold."""
    event = receipt.event
    if receipt.format != RECEIPT_FORMAT:
        raise ReceiptInvalid(f"unknown receipt format {receipt.format!r}")
    if event.seq != receipt.seq or event.hash != receipt.event_hash:
        raise ReceiptInvalid("the receipt's event is not the one its sequence and hash name")
    if hash_message(event_message(event)) != receipt.event_hash:
        raise ReceiptInvalid(f"event {receipt.seq}: its content does not match its hash")
    if receipt.checkpoint is None or receipt.proof is None:
        raise ReceiptInvalid(f"event {receipt.seq} is not sealed by a checkpoint yet; "
                             "fetch the receipt again after the next checkpoint")
    cp, proof = receipt.checkpoint.statement, receipt.proof
    if not signature_valid(receipt.checkpoint, public_key):
        raise ReceiptInvalid(f"checkpoint {cp.index}: not signed by this platform key")
    if not cp.seq_from <= receipt.seq <= cp.seq_to:
        raise ReceiptInvalid(f"checkpoint {cp.index} covers events {cp.seq_from}..{cp.seq_to}, "
                             f"not {receipt.seq}")
    if proof.leaf_index != receipt.seq - cp.seq_from or \
            proof.tree_size != cp.seq_to - cp.seq_from + 1:
        raise ReceiptInvalid("the proof's position does not match the event and checkpoint")
    try:
        path = [bytes.fromhex(p) for p in proof.path]
        leaf, root = bytes.fromhex(receipt.event_hash), bytes.fromhex(cp.merkle_root)
    except ValueError:
        raise ReceiptInvalid("the proof holds something other than hex hashes") from None
    if not merkle.verify_inclusion(leaf, proof.leaf_index, proof.tree_size, path, root):
        raise ReceiptInvalid(f"event {receipt.seq} is not in checkpoint {cp.index}'s Merkle tree")
    if receipt.seq == cp.seq_to and receipt.event_hash != cp.head_hash:
        raise ReceiptInvalid(f"event {receipt.seq} is not the head checkpoint {cp.index} signed")
    return ReceiptCheck(seq=receipt.seq, event_hash=receipt.event_hash,
                        checkpoint_index=cp.index, checkpoint_seq_to=cp.seq_to)
