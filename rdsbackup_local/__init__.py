"""Run rds-backup with no AWS account: deploy the synthesized stacks into moto and run the real handlers.

Used by the README's local run and by the end-to-end tests. Nothing here ships to AWS.
"""
