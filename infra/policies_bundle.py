"""The policies ship inside the Lambda code package, fixed at deploy time.

An SSM parameter held at most 8 KB (10 replicating policies did not fit) and could be changed at run time
by anyone allowed to write it. In the code package the policies have no practical size bound (250 MB
unzipped) and change only with a deploy; the functions' environment carries the document's SHA-256,
so a package altered outside a deploy is refused at the first invocation.

Values CloudFormation resolves at deploy (the repository key's ARN, the account of an environment-
agnostic synth) cannot be written into a file at synth: each is replaced by a placeholder
``{{policies-token:N}}`` and passed in the environment variable ``POLICIES_TOKEN_N``, which
CloudFormation resolves; ``rdsbackup_lambdas.config`` puts them back.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

POLICIES_FILE = "rdsbackup_policies.json"
_CDK_TOKEN = re.compile(r"\$\{Token\[[^\]]+\]\}")


@dataclass(frozen=True)
class PoliciesBundle:
    """The policies file for the code package and the environment that goes with it."""

    text: str
    environment: dict[str, str]


def bundle_policies(policies: dict) -> PoliciesBundle:
    # json.dumps keeps nulls (CDK's to_json_string drops them)
    text = json.dumps(policies, separators=(",", ":"), sort_keys=True)
    tokens: dict[str, int] = {}

    def placeholder(match: re.Match[str]) -> str:
        number = tokens.setdefault(match.group(0), len(tokens))
        return f"{{{{policies-token:{number}}}}}"

    text = _CDK_TOKEN.sub(placeholder, text)
    environment = {
        "POLICIES_FILE": POLICIES_FILE,
        "POLICIES_SHA256": hashlib.sha256(text.encode()).hexdigest(),
        **{f"POLICIES_TOKEN_{number}": token for token, number in tokens.items()},
    }
    return PoliciesBundle(text=text, environment=environment)
