# The results dashboard (streamlit_app.py) as a Hugging Face Docker Space: the README's install steps,
# then its dashboard command. python -m train.space --dashboard uploads this file as the Space's Dockerfile.
FROM python:3.11-slim

# Spaces run the container as user 1000.
RUN useradd --create-home --uid 1000 user
USER user
ENV HOME=/home/user PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /home/user/app

COPY --chown=user requirements.txt .
RUN python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt
COPY --chown=user . .

# The card's app_port; headless: no browser, no prompt for an e-mail address.
ENV PATH=/home/user/app/.venv/bin:$PATH \
    STREAMLIT_SERVER_PORT=8501 \
    STREAMLIT_SERVER_ADDRESS=0.0.0.0 \
    STREAMLIT_SERVER_HEADLESS=true
EXPOSE 8501
CMD ["streamlit", "run", "streamlit_app.py"]
