#!/usr/bin/env python3
"""Publish one message with the official Centrifugo HTTP API client `cent` (pycent).

Usage: cent_publish.py API_URL API_KEY CHANNEL JSON
  e.g. cent_publish.py http://127.0.0.1:8000/api KEY chat:room '{"text":"hi"}'

Prints the PublishResult as JSON ({"offset": N, "epoch": "..."}) on stdout; exits 1 with the
error on stderr when the API answers with an error.
"""
import json
import sys

from cent import Client, PublishRequest
from cent.exceptions import CentError


def main() -> int:
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    api_url, api_key, channel, data = sys.argv[1:]
    client = Client(api_url, api_key, timeout=5.0)
    try:
        result = client.publish(PublishRequest(channel=channel, data=json.loads(data)))
    except CentError as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result.model_dump()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
