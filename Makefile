# weakalign: the commands. `make check` before every commit (CONTRIBUTING.md).
.PHONY: test test-grad check fmt lint doc golden

# Unit + integration tests (one integration binary). Gradient property tests run a modest number
# of cases by default; `make test-grad` runs many more.
test:
	cargo test --release

test-grad:
	PROPTEST_CASES=256 cargo test --release grad

check: fmt lint test doc

fmt:
	cargo fmt --all --check

lint:
	cargo clippy --all-targets -- -D warnings

doc:
	RUSTDOCFLAGS="-D warnings" cargo doc --no-deps

# Regenerates tests/golden/*.json with PyTorch (needs `pip install torch numpy`; never run by CI).
golden:
	python3 tools/make_golden.py tests/golden
