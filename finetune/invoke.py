"""``finetune invoke ENDPOINT PROMPT``: ask a deployed model, as the smoke test and users do.

On AWS: SageMaker Runtime ``InvokeEndpoint`` with the TGI request shape (the serving container's).
On the local backend: the local endpoint of that name, brought up in this process from the model
its endpoint config names (local endpoints live only as long as the process that deployed them).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from finetune.cli_options import AwsFlag, JsonFlag, LocalFlag
from finetune.errors import EXIT_USAGE, CliError

__all__ = ["invoke_command", "tgi_request"]


def tgi_request(prompt: str, max_new_tokens: int) -> dict[str, Any]:
    """The serving container's request (Hugging Face TGI): inputs and generation parameters."""
    return {"inputs": prompt, "parameters": {"max_new_tokens": max_new_tokens}}


def _endpoint_name(backend: Any, name: str) -> str:
    """``name`` as given, or with the platform's prefix (``demo`` -> ``llmft-local-demo``)."""
    prefix = backend.settings().prefix if backend.name == "aws" else "llmft-local"
    return name if name.startswith(f"{prefix}-") else f"{prefix}-{name}"


def _invoke_local(backend: Any, endpoint: str, body: bytes) -> bytes:
    with backend.session.platform() as local:
        sagemaker = local.client("sagemaker")
        try:
            described = sagemaker.describe_endpoint(EndpointName=endpoint)
        except Exception:  # ValidationException: no such endpoint
            raise CliError(f"no local endpoint {endpoint!r}", exit_code=EXIT_USAGE) from None
        config = sagemaker.describe_endpoint_config(
            EndpointConfigName=described["EndpointConfigName"]
        )
        model = sagemaker.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
        if local.endpoints.deploy(endpoint, config, model) != "InService":
            raise CliError(f"{endpoint}: {local.endpoints.failures.get(endpoint, 'not serving')}")
        return bytes(local.endpoints.invoke(endpoint, body, "application/json"))


def invoke_command(
    ctx: typer.Context,
    endpoint: Annotated[str, typer.Argument(help="Endpoint name (with or without the prefix).")],
    prompt: Annotated[str, typer.Argument(help="The text to complete.")],
    max_new_tokens: Annotated[int, typer.Option(min=1, max=4096, help="Tokens to generate.")] = 64,
    json_output: JsonFlag = False,
    local: LocalFlag = False,
    aws: AwsFlag = False,
) -> None:
    """Send a prompt to a deployed model; print what it generated."""
    from finetune.cli import _backend, _run

    def action(options: Any) -> None:
        backend = _backend(options)
        name = _endpoint_name(backend, endpoint)
        body = json.dumps(tgi_request(prompt, max_new_tokens)).encode()
        if backend.name == "local":
            answer = _invoke_local(backend, name, body)
        else:
            from finetune.backends.aws import AwsBackend

            assert isinstance(backend, AwsBackend)
            response = backend.client("sagemaker-runtime").invoke_endpoint(
                EndpointName=name, ContentType="application/json", Body=body
            )
            answer = response["Body"].read()
        generated = json.loads(answer)
        text = generated[0]["generated_text"] if isinstance(generated, list) else generated
        if options.json:
            options.out.print_json(json.dumps({"endpoint": name, "generated_text": text}))
        else:
            options.out.print(text, highlight=False)

    _run(ctx, action, json_output=json_output, local=local, aws=aws)
