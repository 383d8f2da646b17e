"""Test trial that reports NaN."""
import aup

aup.print_result(float("nan"))
