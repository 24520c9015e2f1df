def test_app_boots_without_torch():
    import subprocess
    import sys

    code = "import app.main, sys; assert 'torch' not in sys.modules and 'fasttext' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_key_is_rejected_with_json_error(client):
    response = client.get("/projects", headers={"Authorization": "Bearer nope"})
    assert response.status_code in (401, 404)
    assert "error" in response.json()
