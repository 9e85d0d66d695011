"""The chat template used for tokenizers that ship none (documented in training_code/README.md).

Zephyr-style: each turn is `<|role|>\\n{content}{eos}\\n`, the generation prompt is
`<|assistant|>\\n`. Ending every turn with the EOS token teaches the model to stop, and the
template is saved with the fine-tuned tokenizer so that serving renders prompts identically.
"""

DEFAULT_CHAT_TEMPLATE = (
    "{% if bos_token %}{{ bos_token }}{% endif %}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

ROLE_MARKERS: tuple[str, ...] = ("<|system|>", "<|user|>", "<|assistant|>")
