# The fifoflow runner: python, node and exec runtimes (and go, on a base with golang-go:
# fifoflow images build --with go), as the non-root user fifoflow.
# Python packages come from a wheelhouse in the build context (no index is asked), so
# the image builds where no package registry can be reached.
ARG BASE=fifoflow-base:bookworm
FROM ${BASE}
ARG VERSION=0+unknown
ARG RUNTIMES=python,node,exec

COPY wheels/ /tmp/wheels/
RUN python3 -m venv /opt/fifoflow \
 && /opt/fifoflow/bin/pip install --no-index --find-links /tmp/wheels --no-cache-dir \
        --disable-pip-version-check --quiet fifoflow \
 && rm -rf /tmp/wheels \
 && find /opt/fifoflow -name __pycache__ -prune -exec rm -rf {} + \
 && echo 'fifoflow:x:10001:10001:fifoflow runner:/home/fifoflow:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'fifoflow:x:10001:' >> /etc/group \
 && mkdir -p /home/fifoflow /state && chown 10001:10001 /home/fifoflow /state \
 && node --version && python3 --version \
 && if command -v go >/dev/null; then go version; fi

ENV PATH=/opt/fifoflow/bin:/usr/local/bin:/usr/bin:/bin \
    FIFOFLOW_STATE_DIR=/state \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER fifoflow
WORKDIR /home/fifoflow
VOLUME /state
EXPOSE 8470
LABEL org.opencontainers.image.title="fifoflow runner" \
      org.opencontainers.image.version="${VERSION}" \
      io.fifoflow.runtimes="${RUNTIMES}"
HEALTHCHECK --interval=5s --timeout=5s --start-period=5s --retries=3 \
    CMD ["fifoflow", "runner", "health"]
ENTRYPOINT ["fifoflow", "runner", "serve", "--host", "0.0.0.0"]
