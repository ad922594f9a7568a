"""The site's half of secure aggregation: Flower's ``secaggplus_mod`` on the train messages
that carry SecAgg+'s record (``secure_aggregation=secaggplus``), the plain handler on all others.

The mod answers SecAgg+'s key-setup and unmasking stages itself and, in its masking stage,
calls the train handler, whose legacy ``FitRes`` reply (:mod:`client.messages`) it masks and
quantises before it leaves the site. Flower's mod itself fails on a train message without
SecAgg+'s record, so this wrapper decides per message; it imports the mod (and its
cryptography) only when a secure round arrives.
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.app.message_type import MessageType
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

__all__ = ["secure_aggregation_mod", "is_secure"]


def is_secure(msg: Message) -> bool:
    """Whether ``msg`` is a stage of the SecAgg+ protocol."""
    return msg.metadata.message_type == MessageType.TRAIN and RECORD_KEY_CONFIGS in msg.content.config_records


def secure_aggregation_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Run ``secaggplus_mod`` around ``call_next`` for SecAgg+ messages; pass others through."""
    if not is_secure(msg):
        return call_next(msg, context)
    from flwr.client.mod import secaggplus_mod

    return secaggplus_mod(msg, context, call_next)
