"""Local Lambda emulator: the functions of a SAM template behind an API Gateway HTTP front, the
Lambda Invoke API and the Lambda Runtime API, with real execution-environment semantics: one
isolated process per environment (a private /tmp, a read-only code folder, MemorySize enforced),
run with the image's dependency set, cold starts, timeouts, throttling, Lambda's and API
Gateway's limits (``emulator.limits``) and CloudWatch-style logs."""
