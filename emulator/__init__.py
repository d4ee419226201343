"""Local Lambda emulator: the functions of a SAM template behind an API Gateway HTTP front, the
Lambda Invoke API and the Lambda Runtime API, with real execution-environment semantics
(one worker process per environment, cold starts, timeouts, throttling, CloudWatch-style logs)."""
