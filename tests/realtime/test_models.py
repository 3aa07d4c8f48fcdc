"""The documents the layer writes by hand match what mongoengine would store."""
import datetime

import pytest

from realtime.models import Message

UTC = datetime.timezone.utc


@pytest.mark.parametrize("fields", [
    # a fresh send: no reply, never edited
    dict(body="hello", reply_to=None, client_msg_id="c1", edited_at=None, deleted=False),
    # every optional field set
    dict(body="edited", reply_to="m0", client_msg_id="c2",
         edited_at=datetime.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC), deleted=False),
    # a tombstone
    dict(body=None, reply_to=None, client_msg_id=None, edited_at=None, deleted=True),
])
def test_message_document_is_what_save_would_store(fields):
    message = Message(id="m1", conversation_id="conv", seq=7, sender_id="alice",
                      created_at=datetime.datetime(2026, 1, 1, tzinfo=UTC), **fields)
    document = message.to_document()
    expected = message.to_mongo().to_dict()
    assert document == expected
    assert list(document) == list(expected), "same field order as mongoengine's"
