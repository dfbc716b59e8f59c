# GPU image for the `paper` profile: the papers' models on vLLM.
#   docker build -t alignforge .
#   docker run --gpus all -e HF_TOKEN -e OPENAI_API_KEY -v $PWD/out:/data alignforge build savacu --profile paper
# The vLLM base image brings CUDA, a CUDA build of torch, vLLM and transformers; we add
# alignforge (its `local` extra pins the CPU torch and is not installed here). The `vllm` extra
# pins the image's vLLM release, so pip resolves our dependencies within vLLM's own (fastapi).
FROM vllm/vllm-openai:v0.32.0

ENV ALIGNFORGE_HOME=/data \
    PREFECT_HOME=/data/prefect \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    PYTHONUNBUFFERED=1
WORKDIR /opt/alignforge
COPY pyproject.toml README.md ./
COPY flows ./flows
COPY tasks ./tasks
COPY schemas ./schemas
COPY bench ./bench
COPY prompts ./prompts
COPY data ./data
RUN pip install --no-cache-dir -e '.[vllm,dask]'
VOLUME ["/data"]
ENTRYPOINT ["alignforge"]
CMD ["--help"]
