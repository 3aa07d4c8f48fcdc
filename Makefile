# Dev stack: see README.md. Everything runs from scripts/; state lives in var/.
SHELL := /bin/bash
ARGS ?=

.PHONY: up down test bench clean status logs

up:       ## install what is missing, start everything, wait until ready
	@bash scripts/up.sh

down:     ## stop everything (data in var/ stays)
	@bash scripts/down.sh

test:     ## up with short timings, then pytest (make test ARGS="-k calls -x")
	@bash scripts/test.sh $(ARGS)

bench:    ## benchmarks (scripts/bench.sh)
	@if [ -f scripts/bench.sh ]; then bash scripts/bench.sh $(ARGS); \
	 else echo "no scripts/bench.sh yet"; fi

clean: down  ## remove the stack's data and logs (keeps installs: .venv, var/bin, var/kafka/libs)
	rm -rf var/redis var/kafka/data var/kafka/cluster-id var/kafka/server.properties \
	       var/ferretdb var/nginx var/log var/run var/stack.env

status:   ## supervisord's view of every program
	@.venv/bin/supervisorctl -c supervisord.conf status || true

logs:     ## last lines of every log (make logs FOLLOW=1 to follow)
	@if [ -n "$(FOLLOW)" ]; then tail -n 20 -F var/log/*.log; \
	 else tail -n 20 var/log/*.log; fi
