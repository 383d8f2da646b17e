#!/bin/sh
# Test trial in Auptimizer's legacy protocol: no aup import, result lines on stderr.
echo "config: $1"
echo "#Auptimizer:0.25" >&2
echo "log prefix #Auptimizer:0.5" >&2
echo "#Auptimizer:0.75" >&2
