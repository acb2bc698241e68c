"""The local run's restore test: the demo policy's restore test of orders-db through the real restore-test
state machine (which runs the restore state machine as a child and the real worker), with its result."""

from __future__ import annotations

import json
import time
from typing import Any


def _transitions(sfn: Any, execution_arn: str) -> int:
    events, token = 0, None
    while True:
        page = sfn.get_execution_history(executionArn=execution_arn, maxResults=1000,
                                         **({"nextToken": token} if token else {}))
        events += sum(1 for event in page["events"] if event["type"].endswith("StateEntered"))
        token = page.get("nextToken")
        if not token:
            return events


def run_restore_test(sfn: Any, test_machine_arn: str, restore_machine_arn: str, source: str = "orders-db") -> bool:
    """Run one restore test of `source` and print its result; True when it passed."""
    started = time.monotonic()
    arn = sfn.start_execution(stateMachineArn=test_machine_arn, name="demo-restore-test",
                              input=json.dumps({"policy": "demo", "resources": [source]}))["executionArn"]
    while (described := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
        time.sleep(0.1)
    wall = time.monotonic() - started
    report = json.loads(described["output"] if described["status"] == "SUCCEEDED" else described["cause"])
    children = sfn.list_executions(stateMachineArn=restore_machine_arn)["executions"]
    # the child restore is named after the throwaway (<name prefix>-test-<hash>)
    throwaways = {result.get("throwaway") for result in report.get("sources") or []}
    child = next((c for c in children if c["name"] in throwaways), None)
    child_transitions = _transitions(sfn, child["executionArn"]) if child else 0
    print(f"\nrestore test of {source}: {report['status']} in {wall:.1f} s "
          f"({_transitions(sfn, arn)} state transitions + {child_transitions} in the child restore)")
    for result in report.get("sources") or []:
        print(f"  {result['source']}: {result['status']}; throwaway {result['throwaway']} (restored from "
              f"{result['snapshot_arn']}), restore point {result['restore_point_id']}: "
              f"{result['tables_checked']} tables recounted and re-digested; time to restore "
              f"{result['time_to_restore_seconds']} s")
        for failure in result["failures"]:
            print(f"    failure: {failure}")
        for left in result["left_for_sweeper"]:
            print(f"    left for the sweeper: {left}")
    return report["status"] == "Passed"
