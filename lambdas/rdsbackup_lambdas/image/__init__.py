"""Image-level backup: the temporary worker, its security groups, the SQL Server bucket, cleanup, sweeper.

Everything here runs in the resource's account and region through its access role, except the lease
table (DynamoDB) and the worker's result documents (the repository bucket), which live in the control
account and are reached with the function's own credentials.
"""
