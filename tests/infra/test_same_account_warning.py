"""Item 12 of docs/security.md: a config that keeps replicas or the repository in the account they protect
synthesizes, with a warning that says why that weakens it; the reviewed multi-account shape has none."""

from tests.e2e.configs import CONTROL_ACCOUNT
from tests.infra.conftest import synth_warnings


def _same_account(warnings: list[str]) -> list[str]:
    return [w for w in warnings if "rdsbackup:same-account" in w or "account it protects" in w
            or "stay in that account" in w]


def test_replicas_and_repository_in_the_protected_account_synthesize_with_a_warning_saying_why(cdk_out):
    """The e2e config: control = production account, a policy replicating only to another region, image
    backups into a repository of the control account."""
    warnings = synth_warnings(cdk_out)
    replicas = [w for w in warnings if 'policy "regional"' in w and "replicas" in w]
    assert replicas, warnings
    assert f"replicas of account {CONTROL_ACCOUNT} stay in that account" in replicas[0]
    assert "can delete them with the originals" in replicas[0] and "vault account" in replicas[0]
    repository = [w for w in warnings if 'policy "images"' in w and "repository" in w]
    assert repository, warnings
    assert f"the repository is in the account it protects ({CONTROL_ACCOUNT})" in repository[0]
    assert "its admin can reach the backups" in repository[0] and "separate backup account" in repository[0]
    # a policy that replicates into another account is not warned about
    assert not [w for w in warnings if 'policy "vault"' in w]


def test_the_multi_account_shape_synthesizes_without_that_warning(multi_cdk_out):
    assert _same_account(synth_warnings(multi_cdk_out)) == []
