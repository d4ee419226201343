#!/bin/sh
# /lambda-entrypoint.sh of the local stand-in for public.ecr.aws/lambda/python: like the AWS
# base image's, it runs the runtime interface client for the handler that CMD names, from the
# task root. There is no bundled Runtime Interface Emulator: AWS_LAMBDA_RUNTIME_API must point
# at a Runtime API (`mlinfer emulate --runtime-api-port PORT`).
if [ $# -ne 1 ]; then
    echo "entrypoint requires the handler name to be the first argument" >&2
    exit 142
fi
if [ -z "${AWS_LAMBDA_RUNTIME_API:-}" ]; then
    echo "AWS_LAMBDA_RUNTIME_API is not set: start a Runtime API (mlinfer emulate --runtime-api-port PORT) and set it to 127.0.0.1:PORT" >&2
    exit 1
fi
export _HANDLER="$1"
cd "${LAMBDA_TASK_ROOT}" || exit 1
exec python -m awslambdaric "$1"
