# Replaces paramiko's tests/conftest.py: the `sftp` fixture connects to a
# running Ferry (FERRY_SFTP_PORT, FERRY_SFTP_USER, FERRY_SFTP_PASSWORD)
# instead of paramiko's in-process stub server.
import os

import paramiko
import pytest


@pytest.fixture
def sftp():
    t = paramiko.Transport(("127.0.0.1", int(os.environ["FERRY_SFTP_PORT"])))
    t.connect(
        username=os.environ["FERRY_SFTP_USER"],
        password=os.environ["FERRY_SFTP_PASSWORD"],
    )
    client = paramiko.SFTPClient.from_transport(t)
    # Relative, as upstream's: tests build paths from getcwd() + FOLDER.
    folder = "paramiko-test-target"
    try:
        for name in client.listdir(folder):
            client.remove(folder + "/" + name)
        client.rmdir(folder)
    except IOError:
        pass
    client.mkdir(folder)
    client.FOLDER = folder
    yield client
    client.close()
    t.close()
