#!/bin/bash
# Studio lifecycle configuration (JupyterLab, runs at every app start as sagemaker-user): the
# platform's `finetune` CLI, pointed at this environment, and the walkthrough notebook in
# ~/llm-finetuning. Written by stacks/components/studio_lifecycle.py, which fills in the
# platform's values (bundle, environment, prefix). Idempotent: the bundle is installed once per
# version (its S3 key names its content); notebooks you edited are never overwritten.
set -euo pipefail

BUNDLE="@@BUNDLE_S3_URI@@"
PLATFORM_ENV="@@PLATFORM_ENV@@"
PLATFORM_PREFIX="@@PLATFORM_PREFIX@@"
HOME_DIR="${HOME:-/home/sagemaker-user}"
TARGET="$HOME_DIR/llm-finetuning"
STATE="$HOME_DIR/.llmft"
LOG="$STATE/setup.log"
mkdir -p "$STATE" "$HOME_DIR/.local/bin"
exec >>"$LOG" 2>&1
echo "$(date -u +%FT%TZ) setup from $BUNDLE"

# The environment the CLI and the notebook use (the platform's stack names derive from it).
REGION="${AWS_REGION:-${AWS_DEFAULT_REGION:-$(aws configure get region || true)}}"
printf '{"env": "%s", "prefix": "%s", "region": "%s", "bundle": "%s"}\n' \
    "$PLATFORM_ENV" "$PLATFORM_PREFIX" "$REGION" "$BUNDLE" >"$STATE/platform.json"

if [ "$(cat "$STATE/installed" 2>/dev/null || true)" != "$BUNDLE" ]; then
    work="$(mktemp -d)"
    aws s3 cp --only-show-errors "$BUNDLE" "$work/bundle.zip"
    python -m zipfile -e "$work/bundle.zip" "$work/src"
    # The platform's code, without dependencies: the image brings boto3, pydantic, rich, PyYAML
    # and the SageMaker SDK; what it lacks (studio/requirements.txt, pinned) is installed only
    # when missing, so the image's own packages are never replaced. Offline accounts reach a
    # package index only through a mirror (PIP_INDEX_URL, e.g. CodeArtifact); without one the
    # missing packages are named in this log.
    python -m pip install --quiet --user --no-deps --no-build-isolation "$work/src"
    python "$work/src/studio/missing_requirements.py" "$work/src/studio/requirements.txt" \
        >"$work/missing.txt"
    if [ -s "$work/missing.txt" ]; then
        python -m pip install --quiet --user -r "$work/missing.txt" ||
            echo "warning: could not install $(tr '\n' ' ' <"$work/missing.txt")(no package index)"
    fi
    # Notebooks and examples: copied, never overwriting a file you changed.
    mkdir -p "$TARGET"
    cp -rn "$work/src/studio/notebooks" "$work/src/examples" "$TARGET/" 2>/dev/null ||
        cp -r --update=none "$work/src/studio/notebooks" "$work/src/examples" "$TARGET/"
    echo "$BUNDLE" >"$STATE/installed"
    rm -rf "$work"
fi

# `finetune` in terminals: this environment by default (--env overrides it).
cat >"$HOME_DIR/.local/bin/finetune" <<WRAPPER
#!/bin/bash
export AWS_DEFAULT_REGION="\${AWS_DEFAULT_REGION:-$REGION}"
exec python -m finetune.cli --env "$PLATFORM_ENV" "\$@"
WRAPPER
chmod +x "$HOME_DIR/.local/bin/finetune"
grep -qs 'llmft: .local/bin' "$HOME_DIR/.bashrc" ||
    echo 'export PATH="$HOME/.local/bin:$PATH"  # llmft: .local/bin (finetune)' >>"$HOME_DIR/.bashrc"
echo "$(date -u +%FT%TZ) ready"
