# One image for every Pystol process: `pystol api`, `pystol worker` (and later beat, watch).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pystol_api ./pystol_api
COPY pystol_worker ./pystol_worker
COPY pystol_sim ./pystol_sim
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --uid 10001 --create-home pystol
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
ENV PYTHONUNBUFFERED=1
EXPOSE 8080
ENTRYPOINT ["pystol"]
CMD ["api"]
