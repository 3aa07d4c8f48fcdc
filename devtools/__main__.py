"""Dev CLI.

  python -m devtools token USER [--ttl S] [--session SID] [--device DID]
  python -m devtools seed                 # demo users alice, bob, carol and conversations
  python -m devtools ensure-topics        # create the Kafka topics of PROTOCOL §9
  python -m devtools revoke SESSION_ID    # what the auth service does to revoke a session
"""
from __future__ import annotations

import argparse
import datetime
import sys

from realtime import auth, db, keys, timeutil
from realtime.envelope import ALL_TOPICS
from realtime.models import Conversation
from realtime.redis_client import make_redis
from realtime.settings import get_settings

DEMO_USERS = ("alice", "bob", "carol")
DEMO_CONVERSATIONS = (
    ("demo-alice-bob", "direct", ["alice", "bob"]),
    ("demo-team", "group", ["alice", "bob", "carol"]),
)
# Seconds the revocation marker is kept; longer than any token's lifetime.
REVOCATION_MARKER_TTL_S = 7 * 24 * 3600


def cmd_token(args) -> int:
    settings = get_settings()
    if not settings.dev_mode:
        print("refusing: DEV_MODE is off (tokens come from the auth service)", file=sys.stderr)
        return 2
    print(auth.mint(settings, args.user, ttl_s=args.ttl, now=timeutil.now(),
                    session_id=args.session, device_id=args.device))
    return 0


def cmd_seed(args) -> int:
    db.connect()
    now = datetime.datetime.utcnow()
    for conv_id, kind, members in DEMO_CONVERSATIONS:
        Conversation.objects(id=conv_id).update_one(
            upsert=True, set__kind=kind, set__members=members, set_on_insert__created_at=now,
            set_on_insert__last_seq=0)
        print(f"conversation {conv_id} ({kind}): {', '.join(members)}")
    print("users:", ", ".join(DEMO_USERS), "- mint a token with: python -m devtools token alice")
    return 0


def cmd_ensure_topics(args) -> int:
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    settings = get_settings()
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10000,
                             client_id="realtime-devtools")
    try:
        existing = set(admin.list_topics())
        wanted = [settings.topic(t) for t in ALL_TOPICS]
        missing = [NewTopic(name=t, num_partitions=args.partitions, replication_factor=1)
                   for t in wanted if t not in existing]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
        print("topics:", ", ".join(wanted))
    finally:
        admin.close()
    return 0


def cmd_revoke(args) -> int:
    r = make_redis(get_settings())
    r.set(keys.revoked_session(args.session_id), 1, ex=REVOCATION_MARKER_TTL_S)
    receivers = r.publish(keys.REVOCATION_CHANNEL, args.session_id)
    print(f"revoked {args.session_id} ({receivers} edge nodes listening)")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("token", help="mint a dev token (DEV_MODE only)")
    p.add_argument("user")
    p.add_argument("--ttl", type=float, default=24 * 3600)
    p.add_argument("--session", default=None)
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_token)
    p = sub.add_parser("seed", help="create demo conversations")
    p.set_defaults(func=cmd_seed)
    p = sub.add_parser("ensure-topics", help="create the Kafka topics")
    p.add_argument("--partitions", type=int, default=3)
    p.set_defaults(func=cmd_ensure_topics)
    p = sub.add_parser("revoke", help="revoke an auth session like the auth service does")
    p.add_argument("session_id")
    p.set_defaults(func=cmd_revoke)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
