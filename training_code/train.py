"""SageMaker entry point (SAGEMAKER_PROGRAM / sagemaker_program). This folder is on sys.path."""

from llm_sft.cli import main

raise SystemExit(main())
