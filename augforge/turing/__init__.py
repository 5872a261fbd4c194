"""Visual Turing test: blinded studies of real and generated lesions, a web app, and results.

``study`` builds and reads a study folder, ``app`` is the FastAPI app, ``stats`` the pure
statistics, ``results`` the analysis, ``cli`` the ``augforge turing`` commands.
"""
