from __future__ import annotations

import base64

from emulator import logs


def test_report_line_in_the_cloudwatch_format() -> None:
    cold = logs.report_line("r1", duration_ms=12.344, memory_mb=2048, max_memory_mb=300, init_ms=850.5)
    fields = [
        "Duration: 12.34 ms",
        "Billed Duration: 863 ms",
        "Memory Size: 2048 MB",
        "Max Memory Used: 300 MB",
        "Init Duration: 850.50 ms",
    ]
    assert cold == "REPORT RequestId: r1\t" + "\t".join(fields) + "\t\n"
    warm = logs.report_line("r2", duration_ms=1.2, memory_mb=128, max_memory_mb=20)
    assert warm == "REPORT RequestId: r2\tDuration: 1.20 ms\tBilled Duration: 2 ms\tMemory Size: 128 MB\tMax Memory Used: 20 MB\t\n"
    assert logs.start_line("r1") == "START RequestId: r1 Version: $LATEST\n"


def test_tail_is_the_last_4_kb() -> None:
    log = "x" * 5000 + "END"
    assert base64.b64decode(logs.tail(log)) == log.encode()[-4096:]
