#!/bin/sh
# Runs vhost-recond ($VALGRIND_DAEMON) under valgrind memcheck, for the daemon harness
# (VHOST_RECOND points here). Any error or leak makes the daemon exit 99.
exec valgrind --tool=memcheck --error-exitcode=99 --leak-check=full \
        --errors-for-leak-kinds=definite,indirect --track-fds=no \
        --log-file="$VALGRIND_LOG" "$VALGRIND_DAEMON" "$@"
