"""glm-vision entry point: `python app.py [flags]`, the same as the installed `glm-vision` command.

python app.py                       # web UI and API on http://127.0.0.1:8080
python app.py --prompt "What is in this picture?" --image shot.png   # one answer, no server
python app.py --help                # every flag (each also readable from GLMV_<FLAG>)
"""

from glm_vision.cli import main
from glm_vision.process import exit_now

if __name__ == "__main__":
    exit_now(main())
