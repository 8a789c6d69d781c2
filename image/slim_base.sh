#!/bin/sh
# The Python base image less what no quota-ledger command reads: run as root in the
# Dockerfile's `runtime` stage, on the official python:3.11-slim-bookworm as on a local
# Debian-based stand-in. The final stage copies the result into one layer (FROM scratch),
# so what is deleted here really leaves the image.
#
# Kept: the interpreter and its standard library (with its byte-code), the C libraries,
# dpkg's database (image scanners read /var/lib/dpkg/status) and the packages' copyright
# files. Removed: the base's installer (pip, setuptools, wheel, ensurepip and its bundled
# wheels), the standard library's test suites, IDLE, Tkinter, turtle and lib2to3, and
# documentation, manual pages and translations.
set -eu
python -m pip uninstall --yes --quiet pip setuptools wheel 2>/dev/null || true
stdlib=$(python -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
rm -rf "$stdlib/ensurepip" "$stdlib/idlelib" "$stdlib/tkinter" "$stdlib/turtledemo" \
  "$stdlib/turtle.py" "$stdlib/lib2to3" "$stdlib/test" "$stdlib/unittest/test" \
  "$stdlib/ctypes/test" "$stdlib/sqlite3/test" "$stdlib/distutils/tests" \
  "$stdlib/__pycache__"/turtle.* /usr/share/python-wheels
# Documentation, but each package's copyright file.
find /usr/share/doc -mindepth 1 ! -type d ! -name copyright -delete
find /usr/share/doc -mindepth 1 -type d -empty -delete
# Translations (the C.UTF-8 locale is in /usr/lib/locale; locale.alias stays for glibc).
find /usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
rm -rf /usr/share/man/* /usr/share/info/* /usr/share/lintian /usr/share/linda \
  /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old /var/log/*.log \
  /root/.cache /tmp/*
