# laminate's OpenAI-compatible server (CPU build).
#
#   docker build -t laminate .
#   docker run --rm -p 8080:8080 laminate                                  # the bundled demo model
#   docker run --rm -p 8080:8080 -v /models/x:/model:ro laminate --model /model --api-key K
#
# Arguments after the image name go to `laminate serve` (see `laminate --help`); the API key
# may also come from the environment (-e LAMINATE_API_KEY=K). The default thread count is
# the physical cores the container may run on (its CPU affinity, as --cpuset-cpus sets it);
# a --cpus quota is not seen, so pass --threads N with it. The server's JavaScript thread
# (HTTP, streaming) wants a core too: on a small machine --threads one less than the cores
# serves faster. linux/amd64 and linux/arm64: binding.gyp compiles the AVX2/AVX-512 or
# the NEON kernels for the image's architecture.

ARG NODE_IMAGE=node:20-bookworm-slim

# ---- build: compile the addon and the TypeScript ----
FROM ${NODE_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# node-gyp uses the image's own headers (/usr/local/include/node) instead of downloading them.
ENV npm_config_nodedir=/usr/local
# Everything `npm ci` needs: its install script (scripts/install.cjs) builds the addon
# (prebuilds/ is not copied, so no prebuilt binary matches and it runs node-gyp), and its
# prepare script compiles lib/ into dist/.
COPY package.json package-lock.json binding.gyp CMakeLists.txt tsconfig.json ./
COPY scripts/install.cjs scripts/
COPY native/ native/
COPY lib/ lib/
RUN npm ci --no-audit --no-fund \
 && npm run build:ts \
 && npm prune --omit=dev --no-audit --no-fund \
 && node -e "require('node-gyp-build')('.')" \
 && npm cache clean --force
# Data files the package ships (package.json "files"): the demo model, the default
# calibration set. Copied after the build so that changing them does not recompile.
COPY models/tiny-mistral-bf16/ models/tiny-mistral-bf16/
COPY calibration/ calibration/
COPY README.md ./

# ---- runtime: the built package, its production dependencies, no compiler ----
FROM ${NODE_IMAGE}
ENV NODE_ENV=production
WORKDIR /app
# Owned by root, read by the unprivileged user: the server writes nothing here.
COPY --from=build /app/package.json /app/README.md ./
COPY --from=build /app/node_modules/ node_modules/
COPY --from=build /app/dist/ dist/
COPY --from=build /app/build/Release/laminate.node build/Release/laminate.node
COPY --from=build /app/models/ models/
COPY --from=build /app/calibration/ calibration/
USER node
EXPOSE 8080
# /health answers 200 once the model is loaded (503 while loading or draining); large models
# take a while to map and check, hence the start period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:8080/health').then((r) => process.exit(r.status === 200 ? 0 : 1), () => process.exit(1))"]
# `laminate serve` handles SIGTERM (docker stop) and SIGINT itself: running requests finish
# (--shutdown-timeout, default 30 s; give docker stop -t more than that), then it exits 0.
ENTRYPOINT ["node", "dist/cli/main.js", "serve", "--host", "0.0.0.0", "--port", "8080"]
CMD []
