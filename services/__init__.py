"""The app's services (no gradio here): settings, evaluation reports, Hub download, upload decoding, training
runs, and the `Studio` facade that holds them together; features/ holds the data source, the model cache and
the feature banks and maps built from them (it imports nothing from here).
Importing any of these modules changes no global state and reads no environment variable."""
